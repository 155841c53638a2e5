package backfill_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/producers/backfill"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

const day = int64(24 * time.Hour / time.Millisecond)

// writeHistory writes blocks like promtool's: some spanning a day, one compacted, one empty.
func writeHistory(t *testing.T, dir string) (ship []ulid.ULID, empty ulid.ULID) {
	t.Helper()
	for i := range 3 {
		b := blocktest.Write(t, dir, blocktest.Spec{Series: 3, MinTime: int64(i) * day, Step: 60_000, Samples: 1440})
		if i == 1 {
			blocktest.EditMeta(t, b, func(m *block.Meta) { m.Compaction.Level = 3 })
		}
		ship = append(ship, blocktest.ID(t, b))
	}
	e := blocktest.Write(t, dir, blocktest.Spec{MinTime: 5 * day})
	blocktest.EditMeta(t, e, func(m *block.Meta) { m.Stats.NumSamples = 0 })
	return ship, blocktest.ID(t, e)
}

func options(dir string, staging *stagetest.Staging, pub *stagetest.Publisher) backfill.Options {
	return backfill.Options{
		Dir:       dir,
		Labels:    map[string]string{"cluster": "history"},
		Staging:   staging,
		Publisher: pub,
		Logger:    zerolog.Nop(),
		Backoff:   func() backoff.BackOff { return backoff.WithMaxRetries(&backoff.ZeroBackOff{}, 2) },
	}
}

func readyIDs(pub *stagetest.Publisher) []ulid.ULID {
	var ids []ulid.ULID
	for _, e := range pub.Events(schemas.EventReady) {
		ids = append(ids, e.ULID)
	}
	return ids
}

func TestBackfillResumes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	blocks, _ := writeHistory(t, dir)
	staging, pub := stagetest.NewStaging(), &stagetest.Publisher{}

	// The middle block cannot be staged in the first run.
	var broken atomic.Bool
	broken.Store(true)
	var attempts atomic.Int32
	staging.FailPut = func(name string) error {
		if broken.Load() && strings.Contains(name, blocks[1].String()) {
			attempts.Add(1)
			return errors.New("staging full")
		}
		return nil
	}
	res, err := backfill.Run(ctx, options(dir, staging, pub))
	if err == nil || !strings.Contains(err.Error(), "1 of 4 blocks failed") {
		t.Fatalf("first run: %v", err)
	}
	if res.Shipped != 2 || res.Failed != 1 || res.Skipped != 1 || res.Total != 4 || res.Bytes <= 0 {
		t.Errorf("first run: %+v", res)
	}
	if attempts.Load() != 3 {
		t.Errorf("%d attempts at the failing block, want 3 (2 retries)", attempts.Load())
	}
	if got := readyIDs(pub); len(got) != 2 || got[0] != blocks[0] || got[1] != blocks[2] {
		t.Errorf("ready events %v", got)
	}
	done, err := ship.ReadProgress(filepath.Join(dir, backfill.ProgressFilename))
	if err != nil || len(done) != 2 || !done[blocks[0]] || !done[blocks[2]] {
		t.Errorf("progress %v, %v", done, err)
	}

	// The re-run ships only what is left.
	broken.Store(false)
	res, err = backfill.Run(ctx, options(dir, staging, pub))
	if err != nil {
		t.Fatal(err)
	}
	if res.Shipped != 1 || res.Done != 2 || res.Failed != 0 {
		t.Errorf("second run: %+v", res)
	}
	if got := readyIDs(pub); len(got) != 3 || got[2] != blocks[1] {
		t.Errorf("ready events %v", got)
	}
	ev, err := stagetest.Decode[schemas.BlockReady](pub.Events(schemas.EventReady)[2])
	if err != nil {
		t.Fatal(err)
	}
	if ev.Producer != schemas.ProducerBackfill || ev.Site != "cluster-history" || ev.MaxTime-ev.MinTime < day-60_000 {
		t.Errorf("event %+v", ev)
	}

	// And a third run nothing.
	res, err = backfill.Run(ctx, options(dir, staging, pub))
	if err != nil || res.Shipped != 0 || res.Done != 3 {
		t.Errorf("third run: %+v, %v", res, err)
	}
}

func TestBackfillDryRun(t *testing.T) {
	dir := t.TempDir()
	writeHistory(t, dir)
	staging, pub := stagetest.NewStaging(), &stagetest.Publisher{}
	opts := options(dir, staging, pub)
	opts.DryRun = true
	res, err := backfill.Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Shipped != 3 || res.Skipped != 1 || res.Bytes <= 0 {
		t.Errorf("result %+v", res)
	}
	if len(staging.Names()) != 0 || len(pub.Events("")) != 0 {
		t.Error("dry run staged or published")
	}
	if _, err := os.Stat(filepath.Join(dir, backfill.ProgressFilename)); !os.IsNotExist(err) {
		t.Errorf("dry run wrote progress: %v", err)
	}
}

func TestBackfillRejects(t *testing.T) {
	dir := t.TempDir()
	staging, pub := stagetest.NewStaging(), &stagetest.Publisher{}
	for _, tc := range []struct {
		name string
		edit func(*backfill.Options)
		want string
	}{
		{"no labels", func(o *backfill.Options) { o.Labels = nil }, "no external labels"},
		{"bad site", func(o *backfill.Options) { o.Site = "a/b" }, "site"},
		{"no such dir", func(o *backfill.Options) { o.Dir = filepath.Join(dir, "missing") }, "missing"},
		{"corrupt progress file", func(o *backfill.Options) {
			if err := os.WriteFile(filepath.Join(dir, backfill.ProgressFilename), []byte("{"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "remove it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := options(dir, staging, pub)
			tc.edit(&opts)
			if _, err := backfill.Run(context.Background(), opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
