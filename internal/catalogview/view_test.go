package catalogview

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
)

// funcCatalogue replays recs, says synced, then waits for the end.
type funcCatalogue struct{ recs []schemas.BlockRecord }

func (c funcCatalogue) Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
	for _, r := range c.recs {
		apply(r)
	}
	synced()
	<-ctx.Done()
	return nil
}

// leaseOf runs fn only after it is granted, as a lease would.
type leaseOf struct{ granted chan struct{} }

func (l leaseOf) Lead(ctx context.Context, fn func(context.Context) error) error {
	select {
	case <-l.granted:
		return fn(ctx)
	case <-ctx.Done():
		return nil
	}
}

func rec(n uint64, state string) schemas.BlockRecord {
	return schemas.BlockRecord{ULID: ulid.MustNew(n, nil), State: state}
}

func TestViewFollowsTheCatalogueAndLeadsOnlyWhenGranted(t *testing.T) {
	cat := funcCatalogue{recs: []schemas.BlockRecord{
		rec(1, schemas.StateLive), rec(2, schemas.StateMarked), rec(3, schemas.StateLive), rec(3, schemas.StateDeleted),
	}}
	lease := leaseOf{granted: make(chan struct{})}
	v := New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	led := make(chan []schemas.BlockRecord, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- v.Run(ctx, cat, lease, func(ctx context.Context) error {
			<-v.Synced()
			led <- v.Snapshot()
			return errors.New("stop")
		})
	}()

	// A standby follows the catalogue before it leads.
	select {
	case <-v.Synced():
	case <-ctx.Done():
		t.Fatal("never synced")
	}
	if n := len(v.Snapshot()); n != 2 {
		t.Fatalf("standby view has %d blocks, want 2 (the deleted one left)", n)
	}
	select {
	case <-led:
		t.Fatal("led without the lease")
	default:
	}
	close(lease.granted)
	if got := <-led; len(got) != 2 {
		t.Fatalf("leader saw %d blocks, want 2", len(got))
	}
	if err := <-errc; err == nil || err.Error() != "stop" {
		t.Fatalf("Run returned %v, want the leader's error", err)
	}

	select {
	case <-v.Changed():
	default:
		t.Error("Apply did not signal a change")
	}
}
