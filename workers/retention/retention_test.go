package retention_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/retention"
)

const testTimeout = 30 * time.Second

func newBus(t *testing.T) *bus.Bus {
	t.Helper()
	b, _ := testenv.StartBus(t)
	return b
}

// putBlock writes a block's objects (their content does not matter to retention) and its
// catalogue record; a marked block also gets its deletion mark, written at rec.MarkedTime.
func putBlock(t *testing.T, bkt objstore.Bucket, cat *bus.Catalogue, rec schemas.BlockRecord) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{"chunks/000001", "index"} {
		if err := bkt.Upload(ctx, rec.ULID.String()+"/"+name, bytes.NewReader([]byte("x")), 1); err != nil {
			t.Fatal(err)
		}
	}
	var meta block.Meta
	meta.ULID, meta.MinTime, meta.MaxTime, meta.Version = rec.ULID, rec.MinTime, rec.MaxTime, 1
	meta.Thanos.Labels = rec.Labels
	data, err := meta.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := bkt.Upload(ctx, rec.ULID.String()+"/meta.json", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if rec.State == schemas.StateMarked {
		m, _ := json.Marshal(block.DeletionMark{ID: rec.ULID, Version: 1, DeletionTime: rec.MarkedTime / 1000})
		if err := bkt.Upload(ctx, rec.ULID.String()+"/"+block.DeletionMarkFilename, bytes.NewReader(m), int64(len(m))); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
}

func record(id ulid.ULID, state string, maxt time.Time) schemas.BlockRecord {
	return schemas.BlockRecord{
		Version: schemas.Version, ULID: id, MinTime: maxt.Add(-2 * time.Hour).UnixMilli(), MaxTime: maxt.UnixMilli(),
		Labels: map[string]string{"cluster": "a"}, State: state, Site: "s", Level: 1,
	}
}

func exists(t *testing.T, bkt objstore.Bucket, name string) bool {
	t.Helper()
	ok, err := bkt.Exists(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunAppliesPolicyFromTheCatalogue(t *testing.T) {
	b := newBus(t)
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cat := b.Catalogue()
	now := time.Now()
	var (
		expired  = record(ulid.Make(), schemas.StateLive, now.Add(-40*24*time.Hour))
		overdue  = record(ulid.Make(), schemas.StateMarked, now.Add(-5*24*time.Hour))
		recent   = record(ulid.Make(), schemas.StateMarked, now.Add(-5*24*time.Hour))
		live     = record(ulid.Make(), schemas.StateLive, now.Add(-time.Hour))
		leftover = record(ulid.Make(), schemas.StateLive, now.Add(-3*time.Hour))
		output   = record(ulid.Make(), schemas.StateLive, now.Add(-time.Hour))
	)
	overdue.MarkedTime = now.Add(-3 * 24 * time.Hour).UnixMilli()
	recent.MarkedTime = now.Add(-time.Hour).UnixMilli()
	output.MinTime, output.Sources, output.Level = leftover.MinTime, []ulid.ULID{leftover.ULID, ulid.Make()}, 2
	for _, r := range []schemas.BlockRecord{expired, overdue, recent, live, leftover, output} {
		putBlock(t, bkt, cat, r)
	}

	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- retention.Run(ctx, retention.Options{
			Bucket: bkt, Catalogue: cat, Publisher: b, Leader: b.Lease(retention.LeaseName, "test"),
			Policy:     retention.Policy{DeleteDelay: 48 * time.Hour, Raw: 30 * 24 * time.Hour},
			Registerer: reg,
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	state := func(id ulid.ULID) string {
		rec, _, err := cat.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return rec.State
	}
	waitFor(t, "the overdue block deleted", func() bool { return state(overdue.ULID) == schemas.StateDeleted })
	for _, name := range []string{"meta.json", "index", "chunks/000001", block.DeletionMarkFilename} {
		if exists(t, bkt, overdue.ULID.String()+"/"+name) {
			t.Errorf("deleted block still has %s", name)
		}
	}
	waitFor(t, "the expired block marked", func() bool { return state(expired.ULID) == schemas.StateMarked })
	if !exists(t, bkt, expired.ULID.String()+"/"+block.DeletionMarkFilename) {
		t.Error("expired block has no deletion mark in the bucket")
	}
	waitFor(t, "the covered block marked", func() bool { return state(leftover.ULID) == schemas.StateMarked })

	// The others stay as they are; the newly marked ones wait out their delete delay.
	for _, r := range []schemas.BlockRecord{recent, expired, leftover} {
		if got := state(r.ULID); got != schemas.StateMarked || !exists(t, bkt, r.ULID.String()+"/meta.json") {
			t.Errorf("block %s: state %s, meta.json present %v; want marked and present", r.ULID, got, exists(t, bkt, r.ULID.String()+"/meta.json"))
		}
	}
	for _, r := range []schemas.BlockRecord{live, output} {
		if got := state(r.ULID); got != schemas.StateLive {
			t.Errorf("block %s: state %s, want live", r.ULID, got)
		}
	}
	if got := counter(t, reg, "blockflow_retention_blocks_deleted_total"); got != 1 {
		t.Errorf("deleted counter = %v, want 1", got)
	}
}

// counter returns the value of the counter name (summed over its labels) in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
