package compact_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
	"github.com/blockflow/blockflow/workers/planner"
)

// benchSeries is the size of the benchmark blocks: 100k series, a sample every 15s.
const benchSeries = 100_000

// benchBlocks returns n 2h blocks of benchSeries series (seed tells data sets apart).
// They are written once into the user cache directory, since writing them takes longer
// than compacting them.
func benchBlocks(b *testing.B, seed uint64, n int) []string {
	b.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(cache, "blockflow", "bench", fmt.Sprintf("compact-%dseries-seed%d", benchSeries, seed))
	metas, err := synth.WriteBlocks(context.Background(), dir, synth.Spec{
		Series: benchSeries, Span: time.Duration(n) * synth.DefaultBlockRange, Seed: seed,
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(metas) < n {
		b.Fatalf("%d blocks written, want %d", len(metas), n)
	}
	var dirs []string
	for _, m := range metas[:n] {
		dirs = append(dirs, filepath.Join(dir, m.ULID.String()))
	}
	return dirs
}

// benchGroup is one group's blocks in the bucket and the job that compacts them all.
type benchGroup struct {
	inputs  []schemas.BlockRecord
	job     schemas.CompactJob
	samples uint64
}

func (e *env) benchGroup(b *testing.B, seed uint64, n int) benchGroup {
	b.Helper()
	lbls := map[string]string{"cluster": "bench", "seed": strconv.FormatUint(seed, 10)}
	g := benchGroup{job: schemas.CompactJob{
		Version: schemas.Version, Labels: planner.GroupLabels(lbls, nil), Group: planner.GroupKey(lbls, 0),
	}}
	for _, d := range benchBlocks(b, seed, n) {
		rec := e.upload(b, d, lbls, false)
		g.inputs = append(g.inputs, rec)
		g.samples += rec.NumSamples
		g.job.Inputs = append(g.job.Inputs, schemas.BlockRef{ULID: rec.ULID, MinTime: rec.MinTime, MaxTime: rec.MaxTime})
	}
	schemas.SortRefs(g.job.Inputs)
	g.job.ID = schemas.CompactJobID(g.job.Inputs, "", nil)
	return g
}

// reset undoes a compaction of g: the output goes, the inputs are live again.
func (e *env) reset(b *testing.B, g benchGroup) {
	b.Helper()
	ctx := context.Background()
	out, err := g.job.OutputULID()
	if err != nil {
		b.Fatal(err)
	}
	if err := block.Delete(ctx, e.bkt, out); err != nil {
		b.Fatal(err)
	}
	for _, in := range g.inputs {
		if err := e.bkt.Delete(ctx, in.ULID.String()+"/"+block.DeletionMarkFilename); err != nil {
			b.Fatal(err)
		}
		if err := e.bus.Catalogue().Put(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}

// resetPeakRSS makes the kernel's peak resident set size (VmHWM) start again from the
// current one, after returning freed memory, so a measurement sees only what follows.
func resetPeakRSS(b *testing.B) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// status returns a field of /proc/self/status in bytes ("VmHWM", "RssAnon").
func status(b *testing.B, field string) float64 {
	v, err := readStatus(field)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func readStatus(field string) (float64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

// sampleAnon samples the anonymous resident memory (heap and stacks, without the
// mmapped block files, which the kernel may drop at will) every 10ms; stop returns the
// largest sample.
func sampleAnon(b *testing.B) (stop func() float64) {
	done := make(chan struct{})
	result := make(chan float64)
	go func() {
		peak := status(b, "RssAnon")
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				result <- peak
				return
			case <-t.C:
				if v, err := readStatus("RssAnon"); err == nil {
					peak = max(peak, v)
				}
			}
		}
	}()
	return func() float64 {
		close(done)
		return <-result
	}
}

// measure runs op b.N times (setup before each, untimed) and reports samples/s of
// samples per op, the peak RSS of the ops (which counts the pages of the mmapped input
// blocks they read) and the peak of its anonymous part (heap).
func measure(b *testing.B, samples uint64, setup func(), op func()) {
	var took time.Duration
	peak, anon := 0.0, 0.0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		setup()
		resetPeakRSS(b)
		b.StartTimer()
		stop := sampleAnon(b)
		t0 := time.Now()
		op()
		took += time.Since(t0)
		anon = max(anon, stop())
		peak = max(peak, status(b, "VmHWM"))
	}
	b.ReportMetric(float64(samples)*float64(b.N)/took.Seconds(), "samples/s")
	b.ReportMetric(peak/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(anon/(1<<20), "peak-anon-MiB")
}

// BenchmarkCompact compacts 4 and 12 2h blocks of 100k series with one worker (download
// from a filesystem bucket, compaction, upload, catalogue) and with the Prometheus
// compactor called directly on the same blocks on local disk.
func BenchmarkCompact(b *testing.B) {
	for _, n := range []int{4, 12} {
		b.Run(fmt.Sprintf("%dx2h/worker", n), func(b *testing.B) {
			e := newEnv(b)
			g := e.benchGroup(b, 1, n)
			w := e.newWorker(b, compact.Options{})
			measure(b, g.samples, func() { e.reset(b, g) }, func() {
				if err := w.Handle(context.Background(), g.job); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(fmt.Sprintf("%dx2h/tsdb", n), func(b *testing.B) {
			dirs := benchBlocks(b, 1, n)
			var samples uint64
			for _, d := range dirs {
				m, err := block.ReadMetaFile(d)
				if err != nil {
					b.Fatal(err)
				}
				samples += m.Stats.NumSamples
			}
			dest := b.TempDir()
			measure(b, samples, func() {
				if err := os.RemoveAll(dest); err != nil {
					b.Fatal(err)
				}
			}, func() {
				comp, err := tsdb.NewLeveledCompactorWithOptions(context.Background(), nil, slog.New(slog.DiscardHandler),
					[]int64{int64(n) * 2 * 3_600_000}, chunkenc.NewPool(),
					tsdb.LeveledCompactorOptions{MergeFunc: storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := comp.Compact(dest, dirs, nil); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkCompactScale compacts one group of 4 2h blocks of 100k series with one
// worker, then two groups at once with two workers: the ratio of their samples/s is the
// scale factor of a second worker.
func BenchmarkCompactScale(b *testing.B) {
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("%dworkers", workers), func(b *testing.B) {
			e := newEnv(b)
			var (
				groups  []benchGroup
				ws      []*compact.Worker
				samples uint64
			)
			for i := range workers {
				g := e.benchGroup(b, uint64(1+i), 4)
				groups = append(groups, g)
				samples += g.samples
				ws = append(ws, e.newWorker(b, compact.Options{}))
			}
			measure(b, samples, func() {
				for _, g := range groups {
					e.reset(b, g)
				}
			}, func() {
				var wg sync.WaitGroup
				for i, g := range groups {
					wg.Go(func() {
						if err := ws[i].Handle(context.Background(), g.job); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			})
		})
	}
}
