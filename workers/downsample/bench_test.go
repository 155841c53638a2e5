package downsample

import (
	"context"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// benchSeries is the size of the benchmark block: 1,000 series of two days by default,
// BLOCKFLOW_BENCH_SERIES=100000 for the full size (1.15e9 samples; writing the input
// block alone takes a while).
func benchSeries(b *testing.B) int {
	n := 1_000
	if v := os.Getenv("BLOCKFLOW_BENCH_SERIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("BLOCKFLOW_BENCH_SERIES: %v", err)
		}
	}
	return n
}

// BenchmarkBlock downsamples a 2d raw block of 15s scrapes to 5m, and that to 1h. It
// reports input samples per second and the peak live heap, which should not grow with the
// number of series: the block is streamed one series at a time.
func BenchmarkBlock(b *testing.B) {
	rawDir, rawMeta := rawBlock(b, benchSeries(b))
	dir5m, res5m := downsampleDir(b, rawDir, rawMeta, schemas.Res5m)
	for _, bc := range []struct {
		name       string
		dir        string
		meta       block.Meta
		resolution int64
	}{
		{"raw-to-5m", rawDir, rawMeta, schemas.Res5m},
		{"5m-to-1h", dir5m, res5m.Meta, schemas.Res1h},
	} {
		b.Run(bc.name, func(b *testing.B) {
			id := schemas.DownsampleOutputULID(bc.meta.ULID, bc.resolution)
			var samples uint64
			peak := watchHeap()
			b.ReportAllocs()
			for b.Loop() {
				out := filepath.Join(b.TempDir(), id.String())
				res, err := Block(context.Background(), zerolog.Nop(), bc.dir, bc.meta, out, id, bc.resolution)
				if err != nil {
					b.Fatal(err)
				}
				samples += res.InputSamples
				b.StopTimer()
				os.RemoveAll(out)
				b.StartTimer()
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MiB")
		})
	}
}

// watchHeap samples the live heap every 10ms until the returned function is called, which
// reports the largest sample.
func watchHeap() func() uint64 {
	done := make(chan struct{})
	var (
		wg   sync.WaitGroup
		peak uint64
	)
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak
	}
}
