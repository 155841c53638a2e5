// Package blocktest writes real TSDB blocks with the Prometheus tsdb package, for tests and
// benchmarks of every stage that reads or moves blocks. It is a test helper: no shipped
// binary imports it.
package blocktest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/block"
)

// Spec describes a synthetic block: Series float series named Metric, each with Samples
// samples every Step ms from MinTime. Series i has labels {__name__=Metric, i="<i, zero
// padded>", job="test"} plus Labels, and sample j of series i has value i*Samples+j, so a
// test can compute any expected query result.
type Spec struct {
	Series  int   // default 1
	Samples int   // per series; default 120 (one full chunk)
	MinTime int64 // ms of the first sample
	Step    int64 // ms between samples; default 15000
	Metric  string
	Labels  map[string]string
}

func (s Spec) withDefaults() Spec {
	if s.Series <= 0 {
		s.Series = 1
	}
	if s.Samples <= 0 {
		s.Samples = 120
	}
	if s.Step <= 0 {
		s.Step = 15_000
	}
	if s.Metric == "" {
		s.Metric = "test_metric"
	}
	return s
}

// MaxTime is the block's exclusive maxTime: the last sample's timestamp + 1.
func (s Spec) MaxTime() int64 {
	s = s.withDefaults()
	return s.MinTime + int64(s.Samples-1)*s.Step + 1
}

// SeriesSet returns the series Write puts in the block, sorted by labels.
func (s Spec) SeriesSet() []storage.Series {
	s = s.withDefaults()
	out := make([]storage.Series, 0, s.Series)
	for i := range s.Series {
		b := labels.NewBuilder(labels.FromMap(s.Labels))
		b.Set(model.MetricNameLabel, s.Metric)
		b.Set("i", fmt.Sprintf("%06d", i))
		b.Set("job", "test")
		samples := make([]chunks.Sample, s.Samples)
		for j := range s.Samples {
			samples[j] = sample{t: s.MinTime + int64(j)*s.Step, f: float64(i*s.Samples + j)}
		}
		out = append(out, storage.NewListSeries(b.Labels(), samples))
	}
	return out
}

// Write creates one level-1 block in dir (created if missing) and returns its directory.
func Write(tb testing.TB, dir string, s Spec) string {
	tb.Helper()
	s = s.withDefaults()
	// The head only accepts samples within half a chunk range of its newest sample, and
	// series are appended one after another, so the range must span the block twice.
	chunkRange := max(tsdb.DefaultBlockDuration, 2*(s.MaxTime()-s.MinTime))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	path, err := tsdb.CreateBlock(s.SeriesSet(), dir, chunkRange, promslog.NewNopLogger())
	if err != nil {
		tb.Fatalf("write test block: %v", err)
	}
	return path
}

// ID returns the ULID of the block in dir (its base name).
func ID(tb testing.TB, dir string) ulid.ULID {
	tb.Helper()
	id, err := ulid.Parse(filepath.Base(dir))
	if err != nil {
		tb.Fatalf("block dir %s: %v", dir, err)
	}
	return id
}

// EditMeta rewrites the meta.json of the block in dir, e.g. to raise its compaction level
// or to make it look empty.
func EditMeta(tb testing.TB, dir string, edit func(*block.Meta)) {
	tb.Helper()
	m, err := block.ReadMetaFile(dir)
	if err != nil {
		tb.Fatal(err)
	}
	edit(&m)
	if err := block.WriteMetaFile(dir, m); err != nil {
		tb.Fatal(err)
	}
}

// Truncate cuts the file rel ("index", "chunks/000001") of the block in dir to size bytes.
func Truncate(tb testing.TB, dir, rel string, size int64) {
	tb.Helper()
	if err := os.Truncate(filepath.Join(dir, filepath.FromSlash(rel)), size); err != nil {
		tb.Fatal(err)
	}
}

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }
