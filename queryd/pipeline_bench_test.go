package queryd_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/queryd"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/upload"
)

// pipeline is the real path of a block in one process: embedded JetStream, a filesystem
// bucket, an upload worker and queryd.
type pipeline struct {
	bus    *bus.Bus
	bucket objstore.Bucket
	q      *queryd.Server
	api    *httptest.Server
}

func startPipeline(b *testing.B) *pipeline {
	b.Helper()
	dir := b.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: dir + "/nats"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	bb, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL()}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	bkt, err := objstore.NewFilesystem(dir + "/bucket")
	if err != nil {
		b.Fatal(err)
	}
	q, err := queryd.New(queryd.Options{Bucket: bkt, Catalogue: bb.Catalogue(), DataDir: dir + "/queryd"})
	if err != nil {
		b.Fatal(err)
	}
	w := &upload.Worker{Bucket: bkt, Staging: bb.Staging(), Catalogue: bb.Catalogue(), Publisher: bb,
		DataDir: dir + "/upload", Metrics: upload.NewMetrics(prometheus.NewRegistry())}
	done := make(chan struct{}, 2)
	go func() {
		_ = bus.Run(ctx, bb, bus.ConsumerSpec{Stream: bus.StreamEvents, Durable: "upload",
			FilterSubjects: []string{bb.EventFilter(schemas.EventReady)}}, w.Handle)
		done <- struct{}{}
	}()
	go func() { _ = q.Run(ctx); done <- struct{}{} }()
	api := httptest.NewServer(q.Handler())
	b.Cleanup(func() {
		api.Close()
		cancel()
		<-done
		<-done
		q.Close()
		bb.Close()
	})
	if err := q.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	return &pipeline{bus: bb, bucket: bkt, q: q, api: api}
}

// seriesAt asks queryd's HTTP API how many series of job="synth" it has at t.
func (p *pipeline) seriesAt(b *testing.B, t time.Time, site string) bool {
	v := url.Values{"query": {fmt.Sprintf(`count({job="synth",site=%q})`, site)}, "time": {fmt.Sprint(t.Unix())}}
	resp, err := http.PostForm(p.api.URL+"/api/v1/query", v)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return strings.Contains(string(body), `"value"`)
}

// BenchmarkReadyToQueryable measures how long a freshly cut 2h block of 10k series takes
// from block.ready to answering a PromQL query through queryd: the upload worker's
// staging download, verification and bucket write, the catalogue update, and queryd's
// first read of the new block.
func BenchmarkReadyToQueryable(b *testing.B) {
	p := startPipeline(b)
	tsdbDir := b.TempDir()
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		site := fmt.Sprintf("bench-%d", i)
		dir := fmt.Sprintf("%s/%d", tsdbDir, i)
		metas, err := synth.WriteBlocks(ctx, dir, synth.Spec{Series: 10_000, Start: start, Span: 2 * time.Hour, Seed: uint64(i)})
		if err != nil {
			b.Fatal(err)
		}
		m, err := block.ReadMetaFile(dir + "/" + metas[0].ULID.String())
		if err != nil {
			b.Fatal(err)
		}
		sh := &ship.Shipper{Staging: p.bus.Staging(), Publisher: p.bus, Site: site,
			Labels: map[string]string{"site": site}, Producer: schemas.ProducerSidecar}
		// Staging the files is the sidecar's part; the clock starts at block.ready.
		b.StartTimer()
		began := time.Now()
		if _, err := sh.Ship(ctx, ship.Local{Dir: dir + "/" + metas[0].ULID.String(), Meta: m}); err != nil {
			b.Fatal(err)
		}
		for !p.seriesAt(b, start.Add(time.Hour), site) {
			time.Sleep(5 * time.Millisecond)
		}
		total += time.Since(began)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/block")
}

// BenchmarkColdStartRealCatalogue measures queryd's start with 1,000 records in the real
// JetStream KV catalogue: from New to ready (the catalogue snapshot loaded).
func BenchmarkColdStartRealCatalogue(b *testing.B) {
	p := startPipeline(b)
	ctx := context.Background()
	cat := p.bus.Catalogue()
	for i := range 1000 {
		id := ulid.MustNew(uint64(i+1), strings.NewReader(strings.Repeat("x", 16)))
		rec := schemas.BlockRecord{Version: schemas.Version, ULID: id, MinTime: int64(i) * 7_200_000, MaxTime: int64(i+1) * 7_200_000,
			Labels: map[string]string{"cluster": "bench"}, Level: 1, Sources: []ulid.ULID{id}, Source: block.SourceSidecar,
			Files: []schemas.File{{RelPath: "index", Size: 1 << 20}, {RelPath: "chunks/000001", Size: 1 << 24}}, State: schemas.StateLive}
		if err := cat.Put(ctx, rec); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	for b.Loop() {
		runCtx, cancel := context.WithCancel(ctx)
		q, err := queryd.New(queryd.Options{Bucket: p.bucket, Catalogue: cat, DataDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = q.Run(runCtx); close(done) }()
		if err := q.WaitReady(runCtx); err != nil {
			b.Fatal(err)
		}
		if n := len(q.Blocks().All()); n != 1000 {
			b.Fatalf("%d blocks after the snapshot, want 1000", n)
		}
		cancel()
		<-done
		q.Close()
	}
}
