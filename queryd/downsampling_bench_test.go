package queryd

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

// BenchmarkRange30d runs 30-day range queries at a step of 1h over 16 synthetic series
// scraped every 15s (2.8M raw samples in three 10d blocks), on raw data and on the 1h blocks
// the downsampler made of them (max_source_resolution=1h), from a warm index cache; chunks
// come from the bucket on every query. samples/op is what PromQL counts as touched (each
// window of each step), samples-read/op what it read from storage.
func BenchmarkRange30d(b *testing.B) {
	const series, day = 16, 24 * time.Hour
	fs, err := objstore.NewFilesystem(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	bkt := blocktest.NewCountingBucket(fs)
	// A multiple of 10 days since the epoch, so that the three blocks start where asked.
	startMs := dsStart.UnixMilli() - dsStart.UnixMilli()%(10*day).Milliseconds()
	var recs []schemas.BlockRecord
	for i := range 3 {
		from := time.UnixMilli(startMs).Add(time.Duration(i) * 10 * day)
		rawDir, rawMeta := synthBlock(b, series, from, 10*day)
		dir5m, meta5m := downsampleBlock(b, rawDir, rawMeta, schemas.Res5m)
		dir1h, _ := downsampleBlock(b, dir5m, meta5m, schemas.Res1h)
		recs = append(recs, uploadAt(b, bkt, rawDir, schemas.ResRaw), uploadAt(b, bkt, dir5m, schemas.Res5m), uploadAt(b, bkt, dir1h, schemas.Res1h))
	}
	srv, err := New(Options{Bucket: bkt, Catalogue: blocktest.Static(recs, nil), DataDir: b.TempDir(), Logger: zerolog.Nop()})
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
	start := time.UnixMilli(startMs).Add(2 * time.Hour)
	end := time.UnixMilli(startMs).Add(30 * day)

	for _, query := range []string{`avg_over_time(synth_temperature[1h])`, `rate(synth_requests_total[2h])`} {
		for _, res := range []struct {
			name     string
			maxRes   int64
			lookback time.Duration // as the HTTP API sets it for the resolution
		}{{"raw", schemas.ResRaw, 0}, {"1h", schemas.Res1h, time.Hour}} {
			b.Run(query+"/"+res.name, func(b *testing.B) {
				q := srv.local(res.maxRes)
				run := func() (total, read int64) {
					qry, err := engine.NewRangeQuery(ctx, q, promql.NewPrometheusQueryOpts(false, res.lookback, nil), query, start, end, time.Hour)
					if err != nil {
						b.Fatal(err)
					}
					defer qry.Close()
					r := qry.Exec(ctx)
					if r.Err != nil {
						b.Fatal(r.Err)
					}
					if m, err := r.Matrix(); err != nil || len(m) != series/4 {
						b.Fatalf("%d series, %v", len(m), err)
					}
					s := qry.Stats().Samples
					return s.TotalSamples, s.SamplesRead
				}
				run() // the indexes are cached from here on
				reads := bkt.Calls("GetRange", "")
				var total, read int64
				for b.Loop() {
					t, r := run()
					total, read = total+t, read+r
				}
				b.ReportMetric(float64(total)/float64(b.N), "samples/op")
				b.ReportMetric(float64(read)/float64(b.N), "samples-read/op")
				b.ReportMetric(float64(bkt.Calls("GetRange", "")-reads)/float64(b.N), "range-reads/op")
			})
		}
	}
}
