// Package blockset keeps the set of blocks queryd can read, as the catalogue describes
// them: it follows the catalogue (snapshot, then updates), decides which blocks are
// queryable (live, deduplicated by compaction sources; marked until covered), and hands
// queries an immutable snapshot.
package blockset

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/queryd/bucketblock"
	"github.com/blockflow/blockflow/schemas"
)

// Catalogue delivers the catalogue's block records: every current record, then synced,
// then each change as it happens, until ctx ends. A deleted block arrives as a record in
// state deleted.
type Catalogue interface {
	Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error
}

// Set is the catalogued blocks and their readers. It is safe for concurrent use.
type Set struct {
	cache *bucketblock.Cache
	log   zerolog.Logger
	m     *metrics

	mu      sync.Mutex
	members map[ulid.ULID]*member
	snap    *Snapshot // nil once the members changed
	// seen is non-nil while a watch replays the catalogue: the blocks it delivered, so
	// that blocks removed while the watch was down are dropped when it syncs.
	seen map[ulid.ULID]bool

	syncs     atomic.Int64 // completed replays
	ready     chan struct{}
	readyOnce sync.Once
}

type member struct {
	rec   schemas.BlockRecord
	block *bucketblock.Block
}

// New returns an empty set that makes block readers with cache.
func New(cache *bucketblock.Cache, logger zerolog.Logger, reg prometheus.Registerer) *Set {
	s := &Set{
		cache:   cache,
		log:     logger,
		members: map[ulid.ULID]*member{},
		ready:   make(chan struct{}),
	}
	s.m = newMetrics(reg, func() float64 { return float64(len(s.Snapshot().All())) })
	return s
}

// Run follows cat until ctx ends, watching again with backoff when a watch fails.
func (s *Set) Run(ctx context.Context, cat Catalogue) error {
	bo := backoff.NewExponentialBackOff()
	bo.MaxInterval = 30 * time.Second
	bo.MaxElapsedTime = 0
	for {
		s.mu.Lock()
		s.seen = map[ulid.ULID]bool{}
		s.mu.Unlock()

		syncedBefore := s.syncs.Load()
		err := cat.Watch(ctx, s.apply, s.synced)
		if ctx.Err() != nil {
			return nil
		}
		if s.syncs.Load() > syncedBefore {
			bo.Reset()
		}
		wait := bo.NextBackOff()
		s.m.watchRestarts.Inc()
		s.log.Warn().Err(err).Dur("retry_in", wait).Msg("catalogue watch ended, watching again")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// apply takes one catalogue record.
func (s *Set) apply(rec schemas.BlockRecord) {
	if err := rec.Validate(); err != nil {
		s.m.invalid.Inc()
		s.log.Warn().Err(err).Str(logging.FieldBlock, rec.ULID.String()).Msg("ignoring invalid catalogue record")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen != nil {
		s.seen[rec.ULID] = true
	}
	m := s.members[rec.ULID]
	switch {
	case rec.State == schemas.StateDeleted:
		if m != nil {
			s.removeLocked(m)
		}
	case m != nil:
		s.m.blocks.WithLabelValues(m.rec.State).Dec()
		m.rec = rec
		s.m.blocks.WithLabelValues(rec.State).Inc()
		s.snap = nil
	default:
		b, err := bucketblock.New(rec, s.cache)
		if err != nil {
			s.m.invalid.Inc()
			s.log.Warn().Err(err).Str(logging.FieldBlock, rec.ULID.String()).Msg("ignoring unreadable catalogue record")
			return
		}
		s.members[rec.ULID] = &member{rec: rec, block: b}
		s.m.blocks.WithLabelValues(rec.State).Inc()
		s.snap = nil
	}
}

func (s *Set) removeLocked(m *member) {
	delete(s.members, m.rec.ULID)
	s.m.blocks.WithLabelValues(m.rec.State).Dec()
	m.block.Drop()
	s.snap = nil
}

// synced marks the end of a watch's replay: blocks it did not deliver are gone.
func (s *Set) synced() {
	s.mu.Lock()
	if s.seen != nil {
		for id, m := range s.members {
			if !s.seen[id] {
				s.removeLocked(m)
			}
		}
		s.seen = nil
	}
	known := make(map[ulid.ULID]bool, len(s.members))
	for id := range s.members {
		known[id] = true
	}
	s.mu.Unlock()

	// Cached files of blocks deleted while queryd was down.
	s.cache.Prune(func(id ulid.ULID) bool { return known[id] })
	s.syncs.Add(1)
	s.readyOnce.Do(func() {
		close(s.ready)
		s.log.Info().Int("blocks", len(known)).Msg("catalogue snapshot loaded")
	})
}

// Ready reports whether the catalogue snapshot has been loaded.
func (s *Set) Ready() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// WaitReady blocks until the catalogue snapshot is loaded or ctx ends.
func (s *Set) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Snapshot returns the queryable blocks now.
func (s *Set) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil {
		return s.snap
	}
	recs := make([]schemas.BlockRecord, 0, len(s.members))
	for _, m := range s.members {
		recs = append(recs, m.rec)
	}
	keep := queryable(recs)
	blocks := make([]*bucketblock.Block, 0, len(keep))
	for _, r := range keep {
		blocks = append(blocks, s.members[r.ULID].block)
	}
	s.snap = newSnapshot(blocks)
	return s.snap
}

// Record returns the catalogue record of a known (not deleted) block.
func (s *Set) Record(id ulid.ULID) (schemas.BlockRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.members[id]
	if !ok {
		return schemas.BlockRecord{}, false
	}
	return m.rec, true
}
