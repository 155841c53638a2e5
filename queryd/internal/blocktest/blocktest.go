// Package blocktest makes what queryd's tests read: real TSDB blocks written with the
// Prometheus tsdb package, uploaded to a bucket the way the upload stage does, and
// catalogues that deliver their records.
package blocktest

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// Sample is a float sample, or a histogram sample when Hist is set.
type Sample struct {
	TS   int64
	V    float64
	Hist *histogram.Histogram
}

func (s Sample) T() int64                      { return s.TS }
func (s Sample) ST() int64                     { return 0 }
func (s Sample) F() float64                    { return s.V }
func (s Sample) H() *histogram.Histogram       { return s.Hist }
func (s Sample) FH() *histogram.FloatHistogram { return nil }
func (s Sample) Copy() chunks.Sample {
	c := s
	if s.Hist != nil {
		c.Hist = s.Hist.Copy()
	}
	return c
}

func (s Sample) Type() chunkenc.ValueType {
	if s.Hist != nil {
		return chunkenc.ValHistogram
	}
	return chunkenc.ValFloat
}

// FloatSeries returns n series {__name__=name, i="<k>", job="<k mod 3>"} with a sample
// every step in [mint, maxt): counters that grow by k+1 per step, with a reset in the
// middle of series 1, and a NaN and an +Inf in series 2 so encodings are exercised.
func FloatSeries(name string, n int, mint, maxt, step int64) []storage.Series {
	out := make([]storage.Series, 0, n)
	for k := range n {
		lset := labels.FromStrings("__name__", name, "i", fmt.Sprint(k), "job", fmt.Sprint("job-", k%3))
		var samples []chunks.Sample
		for t := mint; t < maxt; t += step {
			v := float64((t / step) * int64(k+1))
			switch {
			case k == 1 && t >= (mint+maxt)/2:
				v -= float64(((mint + maxt) / 2 / step) * int64(k+1))
			case k == 2 && t == mint+step:
				v = math.NaN()
			case k == 2 && t == mint+2*step:
				v = math.Inf(1)
			}
			samples = append(samples, Sample{TS: t, V: v})
		}
		out = append(out, storage.NewListSeries(lset, samples))
	}
	return out
}

// HistogramSeries returns n native histogram series {__name__=name, i="<k>"}.
func HistogramSeries(name string, n int, mint, maxt, step int64) []storage.Series {
	out := make([]storage.Series, 0, n)
	for k := range n {
		lset := labels.FromStrings("__name__", name, "i", fmt.Sprint(k))
		var samples []chunks.Sample
		for t := mint; t < maxt; t += step {
			samples = append(samples, Sample{TS: t, Hist: tsdbutil.GenerateTestHistogram(t/step + int64(k))})
		}
		out = append(out, storage.NewListSeries(lset, samples))
	}
	return out
}

// Create writes series as one block under dir and returns the block's directory.
func Create(t testing.TB, dir string, series []storage.Series) string {
	t.Helper()
	// The head rejects samples older than half its chunk range behind its newest one, and
	// series are appended one after the other: make the range far wider than any test block.
	const chunkRange = 7 * 24 * 3600_000
	blockDir, err := tsdb.CreateBlock(series, dir, chunkRange, promslog.NewNopLogger())
	if err != nil {
		t.Fatalf("create block: %v", err)
	}
	return blockDir
}

// Upload writes the block in blockDir to bkt with external labels ext, as the upload
// stage does (thanos section, files with sizes, meta.json last), after edit (if any)
// changed its meta, and returns the block's live catalogue record.
func Upload(t testing.TB, bkt objstore.Bucket, blockDir string, ext map[string]string, edit func(*block.Meta)) schemas.BlockRecord {
	t.Helper()
	meta, err := block.ReadMetaFile(blockDir)
	if err != nil {
		t.Fatalf("read meta: %v", err)
	}
	files, err := block.GatherFiles(blockDir, false)
	if err != nil {
		t.Fatalf("gather files: %v", err)
	}
	meta.Thanos = block.Thanos{Labels: ext, Source: block.SourceSidecar, Files: files}
	if edit != nil {
		edit(&meta)
	}
	meta, err = block.Upload(context.Background(), bkt, blockDir, meta)
	if err != nil {
		t.Fatalf("upload %s: %v", filepath.Base(blockDir), err)
	}
	return meta.Record(schemas.StateLive)
}

// CatalogueFunc is a catalogue made of a function.
type CatalogueFunc func(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error

// Watch implements queryd's catalogue interface.
func (f CatalogueFunc) Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
	return f(ctx, apply, synced)
}

// Static replays recs, says synced, then applies each record sent on updates until ctx
// ends.
func Static(recs []schemas.BlockRecord, updates <-chan schemas.BlockRecord) CatalogueFunc {
	return func(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
		for _, r := range recs {
			apply(r)
		}
		synced()
		for {
			select {
			case r := <-updates:
				apply(r)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// CountingBucket counts the calls made to a bucket, by method and object name.
type CountingBucket struct {
	objstore.Bucket

	mu    sync.Mutex
	calls map[string]int
}

// NewCountingBucket wraps bkt.
func NewCountingBucket(bkt objstore.Bucket) *CountingBucket {
	return &CountingBucket{Bucket: bkt, calls: map[string]int{}}
}

func (b *CountingBucket) count(method, name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[method+" "+name]++
	b.calls[method]++
}

// Calls returns how many times method was called, on name if it is not empty.
func (b *CountingBucket) Calls(method, name string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if name == "" {
		return b.calls[method]
	}
	return b.calls[method+" "+name]
}

func (b *CountingBucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	b.count("Get", name)
	return b.Bucket.Get(ctx, name)
}

func (b *CountingBucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	b.count("GetRange", name)
	return b.Bucket.GetRange(ctx, name, off, length)
}

func (b *CountingBucket) Iter(ctx context.Context, dir string, recursive bool, f func(string) error) error {
	b.count("Iter", dir)
	return b.Bucket.Iter(ctx, dir, recursive, f)
}

func (b *CountingBucket) Exists(ctx context.Context, name string) (bool, error) {
	b.count("Exists", name)
	return b.Bucket.Exists(ctx, name)
}

func (b *CountingBucket) Size(ctx context.Context, name string) (int64, error) {
	b.count("Size", name)
	return b.Bucket.Size(ctx, name)
}
