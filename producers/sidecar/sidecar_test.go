package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

var testLabels = map[string]string{"cluster": "eu-1", "replica": "a"}

type env struct {
	tsdb, data string
	staging    *stagetest.Staging
	pub        *stagetest.Publisher
}

func newEnv(t *testing.T) *env {
	return &env{tsdb: t.TempDir(), data: t.TempDir(), staging: stagetest.NewStaging(), pub: &stagetest.Publisher{}}
}

func (e *env) options() Options {
	return Options{
		TSDBPath:  e.tsdb,
		DataDir:   e.data,
		Labels:    testLabels,
		Staging:   e.staging,
		Publisher: e.pub,
		Logger:    zerolog.Nop(),
	}
}

func (e *env) sidecar(t *testing.T, opts Options) *Sidecar {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// block writes a level-1 block whose samples start at minTime.
func (e *env) block(t *testing.T, minTime int64) ulid.ULID {
	t.Helper()
	return blocktest.ID(t, blocktest.Write(t, e.tsdb, blocktest.Spec{Series: 5, MinTime: minTime}))
}

func (e *env) readyIDs(t *testing.T) []ulid.ULID {
	t.Helper()
	var ids []ulid.ULID
	for _, ev := range e.pub.Events(schemas.EventReady) {
		ids = append(ids, ev.ULID)
	}
	return ids
}

func (e *env) shipperFile(t *testing.T) []ulid.ULID {
	t.Helper()
	done, err := ship.ReadProgress(filepath.Join(e.tsdb, ShipperFilename))
	if err != nil {
		t.Fatal(err)
	}
	var ids []ulid.ULID
	for id := range done {
		ids = append(ids, id)
	}
	return ids
}

func syncOnce(t *testing.T, s *Sidecar, want int) {
	t.Helper()
	n, err := s.SyncOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("shipped %d blocks, want %d", n, want)
	}
}

func sameIDs(a, b []ulid.ULID) bool {
	return fmt.Sprint(sorted(a)) == fmt.Sprint(sorted(b))
}

func sorted(ids []ulid.ULID) []string {
	var s []string
	for _, id := range ids {
		s = append(s, id.String())
	}
	slices.Sort(s)
	return s
}

func TestShipsLevelOneBlocksWithSamples(t *testing.T) {
	e := newEnv(t)
	const hour = int64(time.Hour / time.Millisecond)
	// Written newest first, so the oldest-first order comes from minTime, not the ULID.
	newer := e.block(t, 4*hour)
	older := e.block(t, 2*hour)
	compacted := e.block(t, 0)
	blocktest.EditMeta(t, filepath.Join(e.tsdb, compacted.String()), func(m *block.Meta) { m.Compaction.Level = 2 })
	empty := e.block(t, 6*hour)
	blocktest.EditMeta(t, filepath.Join(e.tsdb, empty.String()), func(m *block.Meta) { m.Stats.NumSamples = 0 })
	// A block still being written, a directory without meta.json, and the rest of a TSDB dir.
	tmp := ulid.MustNew(1, nil).String() + ".tmp-for-creation"
	if err := os.CopyFS(filepath.Join(e.tsdb, tmp), os.DirFS(filepath.Join(e.tsdb, older.String()))); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{ulid.MustNew(2, nil).String(), "wal", "chunks_head"} {
		if err := os.MkdirAll(filepath.Join(e.tsdb, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	opts := e.options()
	opts.Registerer = reg
	s := e.sidecar(t, opts)
	syncOnce(t, s, 2)

	if got := e.readyIDs(t); len(got) != 2 || got[0] != older || got[1] != newer {
		t.Fatalf("ready events for %v, want [%s %s]", got, older, newer)
	}
	site := ship.SiteFromLabels(testLabels)
	for _, evt := range e.pub.Events(schemas.EventReady) {
		ev, err := stagetest.Decode[schemas.BlockReady](evt)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Site != site || evt.Site != site || ev.Producer != schemas.ProducerSidecar || ev.Labels["replica"] != "a" {
			t.Errorf("event %+v", ev)
		}
		m, _ := block.ReadMetaFile(filepath.Join(e.tsdb, ev.ULID.String()))
		if ev.MinTime != m.MinTime || ev.MaxTime != m.MaxTime {
			t.Errorf("time range [%d, %d), block [%d, %d)", ev.MinTime, ev.MaxTime, m.MinTime, m.MaxTime)
		}
		var rels []string
		for _, f := range ev.Files {
			rels = append(rels, f.RelPath)
			local := filepath.Join(e.tsdb, ev.ULID.String(), f.RelPath)
			sum, err := block.SHA256File(local)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(local)
			staged := e.staging.Object(schemas.StagedName(site, ev.ULID, f.RelPath))
			if f.SHA256 != sum || f.Size != fi.Size() || int64(len(staged)) != f.Size {
				t.Errorf("%s: event %+v, local size %d sha %s, staged %d bytes", f.RelPath, f, fi.Size(), sum, len(staged))
			}
		}
		if strings.Join(rels, " ") != "chunks/000001 index meta.json" {
			t.Errorf("files %v", rels)
		}
	}
	if got := e.shipperFile(t); !sameIDs(got, []ulid.ULID{older, newer}) {
		t.Errorf("shipper file lists %v", got)
	}
	data, _ := os.ReadFile(filepath.Join(e.tsdb, ShipperFilename))
	want := fmt.Sprintf("{\n\t\"version\": 1,\n\t\"uploaded\": [\n\t\t%q,\n\t\t%q\n\t]\n}\n", sorted([]ulid.ULID{older, newer})[0], sorted([]ulid.ULID{older, newer})[1])
	if string(data) != want {
		t.Errorf("shipper file:\n%s\nwant:\n%s", data, want)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.data, "staging")); len(entries) != 0 {
		t.Errorf("hard-link dir not cleaned: %v", entries)
	}
	if got := testutil.ToFloat64(s.metrics.shipped); got != 2 {
		t.Errorf("shipped metric %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.lastShipped); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last shipped %v", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 3 {
		t.Errorf("registered %d metrics (%v)", n, err)
	}

	// Nothing new: nothing shipped.
	syncOnce(t, s, 0)
	// A new block: only it.
	newest := e.block(t, 8*hour)
	syncOnce(t, s, 1)
	if got := e.readyIDs(t); len(got) != 3 || got[2] != newest {
		t.Errorf("ready events %v", got)
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t)
	a, b := e.block(t, 0), e.block(t, int64(2*time.Hour/time.Millisecond))
	syncOnce(t, e.sidecar(t, e.options()), 2)

	t.Run("ships nothing twice", func(t *testing.T) {
		syncOnce(t, e.sidecar(t, e.options()), 0)
		if n := len(e.readyIDs(t)); n != 2 {
			t.Errorf("%d ready events", n)
		}
	})
	t.Run("forgets blocks deleted locally", func(t *testing.T) {
		if err := os.RemoveAll(filepath.Join(e.tsdb, a.String())); err != nil {
			t.Fatal(err)
		}
		syncOnce(t, e.sidecar(t, e.options()), 0)
		if got := e.shipperFile(t); !sameIDs(got, []ulid.ULID{b}) {
			t.Errorf("shipper file lists %v, want [%s]", got, b)
		}
	})
	for _, content := range []string{"{not json", `{"version": 2, "uploaded": []}`} {
		t.Run("reships after corrupt shipper file "+content, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(e.tsdb, ShipperFilename), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			before := len(e.readyIDs(t))
			syncOnce(t, e.sidecar(t, e.options()), 1)
			if got := e.readyIDs(t); len(got) != before+1 || got[len(got)-1] != b {
				t.Errorf("ready events %v", got)
			}
			if got := e.shipperFile(t); !sameIDs(got, []ulid.ULID{b}) {
				t.Errorf("shipper file lists %v", got)
			}
		})
	}
}

func TestUnreadableBlockDoesNotStopThePass(t *testing.T) {
	e := newEnv(t)
	bad := e.block(t, 0)
	good := e.block(t, int64(2*time.Hour/time.Millisecond))
	if err := os.WriteFile(filepath.Join(e.tsdb, bad.String(), block.MetaFilename), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := e.sidecar(t, e.options())
	n, err := s.SyncOnce(context.Background())
	if n != 1 || err == nil || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("shipped %d, err %v: want 1 and an error naming %s", n, err, bad)
	}
	if got := e.readyIDs(t); len(got) != 1 || got[0] != good {
		t.Errorf("ready events %v", got)
	}
	// Reported once, not on every pass; still counted as present, so never pruned.
	if n, err := s.SyncOnce(context.Background()); n != 0 || err != nil {
		t.Errorf("second pass: %d, %v", n, err)
	}
	if got := testutil.ToFloat64(s.metrics.failures); got != 1 {
		t.Errorf("failures %v", got)
	}
}

func TestTransientFailureRetriesWithBackoff(t *testing.T) {
	e := newEnv(t)
	id := e.block(t, 0)
	var fail atomic.Bool
	fail.Store(true)
	e.staging.FailPut = func(string) error {
		if fail.Load() {
			return errors.New("staging unavailable")
		}
		return nil
	}
	s := e.sidecar(t, e.options())
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }

	n, err := s.SyncOnce(context.Background())
	if n != 0 || err == nil {
		t.Fatalf("shipped %d, err %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(e.tsdb, ShipperFilename)); !os.IsNotExist(err) {
		t.Errorf("shipper file written without a shipped block: %v", err)
	}
	fail.Store(false)
	// Within the backoff: not retried yet.
	syncOnce(t, s, 0)
	now = now.Add(time.Hour)
	syncOnce(t, s, 1)
	if got := e.readyIDs(t); len(got) != 1 || got[0] != id {
		t.Errorf("ready events %v", got)
	}
	if got := testutil.ToFloat64(s.metrics.failures); got != 1 {
		t.Errorf("failures %v", got)
	}
}

func TestPublishFailureDoesNotRecordTheBlock(t *testing.T) {
	e := newEnv(t)
	e.block(t, 0)
	e.pub.Fail = func(string, ulid.ULID) error { return errors.New("no responders") }
	s := e.sidecar(t, e.options())
	if n, err := s.SyncOnce(context.Background()); n != 0 || err == nil {
		t.Fatalf("shipped %d, err %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(e.tsdb, ShipperFilename)); !os.IsNotExist(err) {
		t.Error("a block whose event was not published is recorded as shipped")
	}
}

// fakePrometheus serves /api/v1/status/config; the first failures requests get a 503.
func fakePrometheus(t *testing.T, yaml string, failures int) *httptest.Server {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/status/config" {
			http.NotFound(w, r)
			return
		}
		if int(calls.Add(1)) <= failures {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"success","data":{"yaml":%q}}`, yaml)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestExternalLabels(t *testing.T) {
	const withLabels = "global:\n  scrape_interval: 15s\n  external_labels:\n    cluster: eu-1\n    replica: b\nscrape_configs: []\n"
	const withoutLabels = "global:\n  scrape_interval: 15s\n"

	t.Run("from Prometheus, after it comes up", func(t *testing.T) {
		e := newEnv(t)
		e.block(t, 0)
		opts := e.options()
		opts.Labels = nil
		opts.PrometheusURL = fakePrometheus(t, withLabels, 1).URL
		syncOnce(t, e.sidecar(t, opts), 1)
		ev, err := stagetest.Decode[schemas.BlockReady](e.pub.Events(schemas.EventReady)[0])
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ev.Labels) != "map[cluster:eu-1 replica:b]" || ev.Site != "cluster-eu-1_replica-b" {
			t.Errorf("labels %v site %q", ev.Labels, ev.Site)
		}
	})
	t.Run("flags win over Prometheus, site flag over derived", func(t *testing.T) {
		e := newEnv(t)
		e.block(t, 0)
		opts := e.options()
		opts.PrometheusURL = fakePrometheus(t, withLabels, 0).URL
		opts.Site = "edge-7"
		syncOnce(t, e.sidecar(t, opts), 1)
		ev, _ := stagetest.Decode[schemas.BlockReady](e.pub.Events(schemas.EventReady)[0])
		if ev.Labels["replica"] != "a" || ev.Site != "edge-7" {
			t.Errorf("labels %v site %q", ev.Labels, ev.Site)
		}
	})
	t.Run("Prometheus without external labels", func(t *testing.T) {
		e := newEnv(t)
		opts := e.options()
		opts.Labels = nil
		opts.PrometheusURL = fakePrometheus(t, withoutLabels, 0).URL
		s := e.sidecar(t, opts)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := s.Run(ctx)
		if !errors.Is(err, errNoLabels) || ctx.Err() != nil {
			t.Errorf("got %v, want %v at once", err, errNoLabels)
		}
	})
	t.Run("Prometheus never answers: bounded by ctx", func(t *testing.T) {
		e := newEnv(t)
		opts := e.options()
		opts.Labels = nil
		opts.PrometheusURL = fakePrometheus(t, withLabels, 1<<30).URL
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		if err := e.sidecar(t, opts).Run(ctx); err == nil {
			t.Error("Run succeeded without labels")
		}
	})
}

func TestNewRejects(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no labels at all", func(o *Options) { o.Labels = nil }, "no external labels: set --label k=v or external_labels in Prometheus's global config"},
		{"no TSDB path", func(o *Options) { o.TSDBPath = "" }, "TSDB path"},
		{"no data dir", func(o *Options) { o.DataDir = "" }, "data dir"},
		{"bad site", func(o *Options) { o.Site = "a.b" }, "site"},
		{"no staging", func(o *Options) { o.Staging = nil }, "staging"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.options()
			tc.edit(&opts)
			if _, err := New(opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestRunShipsNewBlockAtOnce(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.Interval = time.Hour // only the file notification can trigger the second pass
	s := e.sidecar(t, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// Wait for the first pass (the shipper file does not exist yet, so watch the link dir).
	waitFor(t, func() bool { _, err := os.Stat(filepath.Join(e.data, "staging")); return err == nil })
	id := e.block(t, 0) // written as <ulid>.tmp-for-creation, then renamed
	waitFor(t, func() bool { ids := e.readyIDs(t); return len(ids) == 1 && ids[0] == id })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
