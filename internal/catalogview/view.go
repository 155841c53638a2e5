// Package catalogview keeps a process's view of the block catalogue for the singleton
// stages (planner, retention): it follows the catalogue all the time, so a standby takes
// over with its state loaded, and runs the stage's work only while this process leads.
package catalogview

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
)

// Catalogue is the block catalogue as a follower sees it.
type Catalogue interface {
	// Watch calls apply for every record, then synced once, then apply for every change,
	// until ctx ends.
	Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error
}

// Leader runs fn while this process holds a lease, with a context that ends when the
// lease is lost; it returns when ctx ends.
type Leader interface {
	Lead(ctx context.Context, fn func(ctx context.Context) error) error
}

// View is the set of catalogued blocks that are not deleted.
type View struct {
	mu      sync.Mutex
	blocks  map[ulid.ULID]schemas.BlockRecord
	changed chan struct{}
	synced  chan struct{}
	once    sync.Once
}

// New returns an empty View.
func New() *View {
	return &View{
		blocks:  map[ulid.ULID]schemas.BlockRecord{},
		changed: make(chan struct{}, 1),
		synced:  make(chan struct{}),
	}
}

// Apply records rec (a deleted one leaves the view) and signals Changed.
func (v *View) Apply(rec schemas.BlockRecord) {
	v.mu.Lock()
	if rec.State == schemas.StateDeleted {
		delete(v.blocks, rec.ULID)
	} else {
		v.blocks[rec.ULID] = rec
	}
	v.mu.Unlock()
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

// Snapshot returns the blocks now, in no particular order.
func (v *View) Snapshot() []schemas.BlockRecord {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]schemas.BlockRecord, 0, len(v.blocks))
	for _, b := range v.blocks {
		out = append(out, b)
	}
	return out
}

// Changed receives after Apply; several changes may coalesce into one receive.
func (v *View) Changed() <-chan struct{} { return v.changed }

// Synced is closed once the catalogue's snapshot is applied.
func (v *View) Synced() <-chan struct{} { return v.synced }

func (v *View) markSynced() { v.once.Do(func() { close(v.synced) }) }

// settle lets a burst of catalogue changes (a compaction marks all its inputs) land
// before the leader acts on them.
const settle = 200 * time.Millisecond

// WaitSynced waits until the catalogue snapshot is applied; false when ctx ends first.
func (v *View) WaitSynced(ctx context.Context) bool {
	select {
	case <-v.synced:
		return true
	case <-ctx.Done():
		return false
	}
}

// Wait returns at the next change (once a burst of changes has settled), at wake (unless
// zero) or when tick fires (a nil tick never does); false when ctx ends.
func (v *View) Wait(ctx context.Context, wake time.Time, tick <-chan time.Time) bool {
	var wakeC <-chan time.Time
	if !wake.IsZero() {
		t := time.NewTimer(time.Until(wake))
		defer t.Stop()
		wakeC = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-v.changed:
		t := time.NewTimer(settle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
		select {
		case <-v.changed:
		default:
		}
	case <-wakeC:
	case <-tick:
	}
	return true
}

// Run follows cat into v and runs lead while this process leads (always, with a nil
// leader), until ctx ends or either fails. lead should wait for Synced before acting.
func (v *View) Run(ctx context.Context, cat Catalogue, leader Leader, lead func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		watchErr error
	)
	wg.Go(func() {
		watchErr = cat.Watch(ctx, v.Apply, v.markSynced)
		cancel()
	})
	var leadErr error
	if leader == nil {
		leadErr = lead(ctx)
	} else {
		leadErr = leader.Lead(ctx, lead)
	}
	cancel()
	wg.Wait()
	return errors.Join(watchErr, leadErr)
}
