package queryd

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

// BenchmarkColdStart measures a queryd start with an empty cache against a catalogue of
// 1,000 blocks (20 clusters × 50 two-hour blocks): the time from Run to ready, then the
// first query, over the newest block of every cluster (20 index downloads).
func BenchmarkColdStart(b *testing.B) {
	const clusters, perCluster, seriesPerBlock = 20, 50, 50
	fs, err := objstore.NewFilesystem(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	var recs []schemas.BlockRecord
	newest := int64(perCluster-1) * 2 * hour
	for c := range clusters {
		labels := map[string]string{"cluster": fmt.Sprint("c", c)}
		// Older blocks only need records: the first query does not read them.
		for k := range perCluster - 1 {
			recs = append(recs, schemas.BlockRecord{
				Version: schemas.Version, ULID: ulid.MustNew(uint64(c*perCluster+k+1), nil),
				MinTime: int64(k) * 2 * hour, MaxTime: int64(k+1) * 2 * hour, Labels: labels, State: schemas.StateLive,
				Files: []schemas.File{{RelPath: "chunks/000001", Size: 1 << 20}, {RelPath: "index", Size: 1 << 18}, {RelPath: "meta.json"}},
			})
		}
		dir := blocktest.Create(b, b.TempDir(), blocktest.FloatSeries("counter", seriesPerBlock, newest, newest+2*hour, 30_000))
		recs = append(recs, blocktest.Upload(b, fs, dir, labels, nil))
	}
	engine := testEngine()
	at := time.UnixMilli(newest + 2*hour - 60_000)

	var ready, first time.Duration
	for b.Loop() {
		dataDir, err := os.MkdirTemp(b.TempDir(), "queryd")
		if err != nil {
			b.Fatal(err)
		}
		srv, err := New(Options{Bucket: fs, Catalogue: blocktest.Static(recs, nil), DataDir: dataDir, Logger: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		t0 := time.Now()
		go func() { done <- srv.Run(ctx) }()
		if err := srv.WaitReady(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		n := runQuery(b, engine, srv.Queryable(), `sum by (cluster) (rate(counter[5m]))`, at, time.Time{}, 0)
		ready += t1.Sub(t0)
		first += time.Since(t1)
		if n != clusters {
			b.Fatalf("got %d series, want %d", n, clusters)
		}
		cancel()
		<-done
		srv.Close()
		os.RemoveAll(dataDir)
	}
	b.ReportMetric(float64(ready.Nanoseconds())/float64(b.N), "ns-to-ready/op")
	b.ReportMetric(float64(first.Nanoseconds())/float64(b.N), "ns-first-query/op")
}

// BenchmarkQuery2hBlock reads a two-hour block of 10,000 series scraped every 30s
// (2.4M samples) from a warm index cache; chunks come from the bucket on every query.
func BenchmarkQuery2hBlock(b *testing.B) {
	const series, samplesPerSeries = 10_000, 240
	fs, err := objstore.NewFilesystem(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	dir := blocktest.Create(b, b.TempDir(), blocktest.FloatSeries("counter", series, 0, 2*hour, 30_000))
	rec := blocktest.Upload(b, fs, dir, ext, nil)
	srv, err := New(Options{Bucket: fs, Catalogue: blocktest.Static([]schemas.BlockRecord{rec}, nil), DataDir: b.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		srv.Close()
	}()
	if err := srv.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	engine := testEngine()
	end := time.UnixMilli(2*hour - 1)

	for _, bc := range []struct {
		name       string
		query      string
		start, end time.Time
		step       time.Duration
		want       int
	}{
		{"instant count_over_time", `count_over_time(counter[2h])`, end, time.Time{}, 0, series},
		{"range sum rate step 30s", `sum(rate(counter[5m]))`, time.Unix(0, 0), end, 30 * time.Second, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			runQuery(b, engine, srv.Queryable(), bc.query, bc.start, bc.end, bc.step) // the index is cached from here on
			for b.Loop() {
				if n := runQuery(b, engine, srv.Queryable(), bc.query, bc.start, bc.end, bc.step); n != bc.want {
					b.Fatalf("got %d series, want %d", n, bc.want)
				}
			}
			b.ReportMetric(float64(series*samplesPerSeries)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// runQuery runs an instant query at start (end zero) or a range query, and returns the
// number of series in the result.
func runQuery(b *testing.B, engine *promql.Engine, q storage.Queryable, query string, start, end time.Time, step time.Duration) int {
	b.Helper()
	ctx := context.Background()
	var qry promql.Query
	var err error
	if end.IsZero() {
		qry, err = engine.NewInstantQuery(ctx, q, nil, query, start)
	} else {
		qry, err = engine.NewRangeQuery(ctx, q, nil, query, start, end, step)
	}
	if err != nil {
		b.Fatal(err)
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		b.Fatal(res.Err)
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		return len(v)
	case promql.Matrix:
		return len(v)
	}
	return 0
}
