package bus

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

func testRecord() schemas.BlockRecord {
	return schemas.BlockRecord{
		Version: schemas.Version,
		ULID:    ulid.Make(),
		MinTime: 0,
		MaxTime: 7_200_000,
		Labels:  map[string]string{"cluster": "eu1"},
		Level:   1,
		Source:  "sidecar",
		State:   schemas.StateLive,
	}
}

// watcher collects what Catalogue.Watch delivers.
type watcher struct {
	mu     sync.Mutex
	recs   map[ulid.ULID]schemas.BlockRecord
	synced int
	// countAtSync is how many records were applied before synced.
	countAtSync int
}

func (w *watcher) apply(r schemas.BlockRecord) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.recs[r.ULID] = r
}

func (w *watcher) sync() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.synced++
	w.countAtSync = len(w.recs)
}

func (w *watcher) state() (recs map[ulid.ULID]schemas.BlockRecord, synced, countAtSync int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	recs = make(map[ulid.ULID]schemas.BlockRecord, len(w.recs))
	for k, v := range w.recs {
		recs[k] = v
	}
	return recs, w.synced, w.countAtSync
}

// watch runs Catalogue.Watch until the test ends.
func watch(t *testing.T, c *Catalogue) *watcher {
	w := &watcher{recs: map[ulid.ULID]schemas.BlockRecord{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, w.apply, w.sync) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return w
}

func TestCatalogueWatchSnapshotThenUpdates(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	cat := b.Catalogue()
	var snapshot []schemas.BlockRecord
	for range 3 {
		r := testRecord()
		snapshot = append(snapshot, r)
		if err := cat.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// A value that is not a record is skipped, not fatal.
	if _, err := cat.kv.Put(ctx, ulid.Make().String(), []byte("not json")); err != nil {
		t.Fatal(err)
	}

	w := watch(t, cat)
	waitFor(t, "synced", func() bool { _, synced, _ := w.state(); return synced == 1 })
	if _, _, n := w.state(); n != len(snapshot) {
		t.Fatalf("%d records before synced, want %d", n, len(snapshot))
	}

	live := testRecord()
	if err := cat.Put(ctx, live); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Update(ctx, snapshot[0].ULID, func(r *schemas.BlockRecord, exists bool) error {
		r.State = schemas.StateMarked
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "live updates", func() bool {
		recs, _, _ := w.state()
		_, ok := recs[live.ULID]
		return ok && recs[snapshot[0].ULID].State == schemas.StateMarked
	})
	if _, synced, _ := w.state(); synced != 1 {
		t.Errorf("synced called %d times, want 1", synced)
	}

	list, err := cat.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 {
		t.Errorf("List returned %d records, want 4", len(list))
	}
}

func TestCatalogueWatchEmpty(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	w := watch(t, b.Catalogue())
	waitFor(t, "synced on an empty catalogue", func() bool { _, synced, _ := w.state(); return synced == 1 })
	r := testRecord()
	if err := b.Catalogue().Put(testContext(t), r); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first record", func() bool { recs, _, _ := w.state(); return len(recs) == 1 })
}

func TestCatalogueUpdateUnderContention(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	cat := b.Catalogue()
	base := testRecord()

	const writers, each = 2, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				_, err := cat.Update(ctx, base.ULID, func(r *schemas.BlockRecord, exists bool) error {
					if !exists {
						*r = base
					}
					r.NumSeries++
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, rev, err := cat.Get(ctx, base.ULID)
	if err != nil {
		t.Fatal(err)
	}
	if got.NumSeries != writers*each {
		t.Errorf("NumSeries = %d after %d updates: updates were lost", got.NumSeries, writers*each)
	}
	if rev == 0 {
		t.Error("revision is 0")
	}
}

func TestCatalogueErrors(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	cat := b.Catalogue()

	_, _, err := cat.Get(ctx, ulid.Make())
	if !errors.Is(err, ErrNoRecord) || !stage.IsNotFound(err) {
		t.Errorf("Get of a missing block: %v, want ErrNoRecord and stage.ErrNotFound", err)
	}
	invalid := testRecord()
	invalid.State = "gone"
	if err := cat.Put(ctx, invalid); err == nil {
		t.Error("Put stored an invalid record")
	}
	stop := errors.New("no change")
	if _, err := cat.Update(ctx, ulid.Make(), func(*schemas.BlockRecord, bool) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Update returned %v, want fn's error", err)
	}
	other := testRecord()
	if _, err := cat.Update(ctx, ulid.Make(), func(r *schemas.BlockRecord, _ bool) error {
		*r = other
		return nil
	}); err == nil {
		t.Error("Update stored a record under another block's key")
	}
	created, err := cat.Update(ctx, other.ULID, func(r *schemas.BlockRecord, exists bool) error {
		if exists {
			return errors.New("exists before it was created")
		}
		*r = other
		return nil
	})
	if err != nil || created.ULID != other.ULID {
		t.Errorf("Update creating a record: %v, %v", created.ULID, err)
	}
}

func TestCatalogueWatchSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startServer(t, EmbeddedOptions{StoreDir: dir})
	b := connect(t, Config{URL: e.ClientURL()})
	w := watch(t, b.Catalogue())
	waitFor(t, "synced", func() bool { _, synced, _ := w.state(); return synced == 1 })

	e.Shutdown()
	waitFor(t, "the client to notice", func() bool { return !b.nc.IsConnected() })
	startServer(t, EmbeddedOptions{StoreDir: dir, Port: portOf(t, e.ClientURL())})
	r := testRecord()
	waitFor(t, "a write after the restart", func() bool { return b.Catalogue().Put(context.Background(), r) == nil })
	waitFor(t, "the record watched", func() bool { recs, _, _ := w.state(); _, ok := recs[r.ULID]; return ok })
	if _, synced, _ := w.state(); synced != 1 {
		t.Errorf("synced called %d times, want 1", synced)
	}
}
