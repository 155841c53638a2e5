package downsample

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

// TestBlock downsamples a 2d raw block to 5m and the result to 1h, and checks what every
// level must keep of each series: the sample count, sum, min, max, the first and last raw
// values and the counter with resets applied; and the meta.json of each output.
func TestBlock(t *testing.T) {
	rawDir, rawMeta := rawBlock(t, 8)
	dir5m, res5 := downsampleDir(t, rawDir, rawMeta, schemas.Res5m)
	// 1h data normally comes from a 14d 5m block; the algorithm does not care.
	dir1h, res1 := downsampleDir(t, dir5m, res5.Meta, schemas.Res1h)

	raw := readBlock(t, rawDir)
	resets := 0
	for _, s := range raw {
		if sum := rawSummary(t, s.chunks); strings.HasSuffix(s.lset.Get(model.MetricNameLabel), "_total") && sum.total > sum.last {
			resets++
		}
	}
	if resets == 0 {
		t.Fatal("no counter in the raw block resets: the test would prove less than it claims")
	}
	levels := []struct {
		name       string
		resolution int64
		dir        string
		input      block.Meta
		res        Result
	}{{"5m", schemas.Res5m, dir5m, rawMeta, res5}, {"1h", schemas.Res1h, dir1h, res5.Meta, res1}}
	for _, lv := range levels {
		t.Run(lv.name, func(t *testing.T) {
			series := readBlock(t, lv.dir)
			if len(series) != len(raw) {
				t.Fatalf("%d series, raw has %d", len(series), len(raw))
			}
			var samples, chunks uint64
			for i, s := range series {
				if !labels.Equal(s.lset, raw[i].lset) {
					t.Fatalf("series %d is %s, raw %s", i, s.lset, raw[i].lset)
				}
				want, got := rawSummary(t, raw[i].chunks), aggrSummary(t, s.chunks)
				for _, f := range []struct {
					name      string
					got, want float64
				}{
					{"count", got.count, want.count}, {"sum", got.sum, want.sum}, {"min", got.min, want.min},
					{"max", got.max, want.max}, {"first", got.first, want.first}, {"last", got.last, want.last},
					{"counter", got.total, want.total},
				} {
					if !nearlyEqual(f.got, f.want) {
						t.Errorf("%s: %s %v, raw %v", s.lset, f.name, f.got, f.want)
					}
				}
				for _, c := range s.chunks {
					samples += uint64(c.Chunk.NumSamples())
				}
				chunks += uint64(len(s.chunks))
			}

			m := lv.res.Meta
			onDisk, err := block.ReadMetaFile(lv.dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(onDisk, m) {
				t.Errorf("meta.json on disk differs from the one returned:\n%+v\n%+v", onDisk, m)
			}
			switch {
			case m.Thanos.Downsample.Resolution != lv.resolution:
				t.Errorf("resolution %d", m.Thanos.Downsample.Resolution)
			case m.Thanos.Source != block.SourceCompactor:
				t.Errorf("source %q", m.Thanos.Source)
			case !reflect.DeepEqual(m.Thanos.Labels, externalLabels):
				t.Errorf("labels %v", m.Thanos.Labels)
			case !reflect.DeepEqual(m.Compaction, rawMeta.Compaction):
				t.Errorf("compaction %+v, input %+v", m.Compaction, rawMeta.Compaction)
			case m.MinTime != rawMeta.MinTime || m.MaxTime != rawMeta.MaxTime:
				t.Errorf("range [%d, %d), input [%d, %d)", m.MinTime, m.MaxTime, rawMeta.MinTime, rawMeta.MaxTime)
			case m.ULID != schemas.DownsampleOutputULID(lv.input.ULID, lv.resolution) || filepath.Base(lv.dir) != m.ULID.String():
				t.Errorf("ulid %s is not derived from the input", m.ULID)
			case m.Stats.NumSeries != uint64(len(raw)) || m.Stats.NumSamples != samples || m.Stats.NumChunks != chunks ||
				m.Stats.NumFloatSamples != samples:
				t.Errorf("stats %+v; counted %d series, %d chunks, %d samples", m.Stats, len(raw), chunks, samples)
			case m.Thanos.IndexStats == nil || m.Thanos.IndexStats.SeriesMaxSize <= 0 || m.Thanos.IndexStats.ChunkMaxSize <= 0:
				t.Errorf("index stats %+v", m.Thanos.IndexStats)
			case len(m.Thanos.Files) != 3 || m.Thanos.Files[0].RelPath != "chunks/000001" || m.Thanos.Files[1].RelPath != "index" ||
				m.Thanos.Files[2].RelPath != "meta.json" || m.Thanos.Files[0].Hash == nil:
				t.Errorf("files %+v", m.Thanos.Files)
			case !reflect.DeepEqual(m.Thanos.SegmentFiles, []string{"000001"}):
				t.Errorf("segment files %v", m.Thanos.SegmentFiles)
			}
			// 2 days of 15s scrapes are 11520 samples a series; 5m windows hold 20.
			if lv.name == "5m" && (samples != 576*uint64(len(raw)) || lv.res.InputSamples != 11520*uint64(len(raw))) {
				t.Errorf("%d windows from %d samples, want %d from %d", samples, lv.res.InputSamples, 576*len(raw), 11520*len(raw))
			}
		})
	}
}

// TestBlockOpensWithPool opens a downsampled block the way Prometheus' TSDB does: with the
// pool that knows 0xFF chunks a block querier reads it (as window averages), with
// Prometheus' own pool it fails.
func TestBlockOpensWithPool(t *testing.T) {
	rawDir, rawMeta := rawBlock(t, 2)
	dir, _ := downsampleDir(t, rawDir, rawMeta, schemas.Res5m)

	b, err := tsdb.OpenBlock(nil, dir, aggrchunk.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	q, err := tsdb.NewBlockQuerier(b, b.MinTime(), b.MaxTime())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	n := 0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			n++
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil || n != 2*576 {
		t.Errorf("read %d averages (err %v), want %d", n, ss.Err(), 2*576)
	}

	stock, err := tsdb.OpenBlock(nil, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stock.Close()
	sq, err := tsdb.NewBlockQuerier(stock, stock.MinTime(), stock.MaxTime())
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	ss = sq.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	failed := false
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != chunkenc.ValNone {
		}
		failed = failed || it.Err() != nil
	}
	if !failed && ss.Err() == nil {
		t.Error("Prometheus' own pool read downsampled chunks")
	}
}

// TestBlockCorruptInput tells an unreadable input apart from other failures.
func TestBlockCorruptInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(t *testing.T, dir string)
	}{
		{"truncated index", func(t *testing.T, dir string) { blocktest.Truncate(t, dir, "index", 100) }},
		{"truncated chunks", func(t *testing.T, dir string) { blocktest.Truncate(t, dir, "chunks/000001", 1000) }},
		{"no chunks", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "chunks")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, meta := rawBlock(t, 2)
			tc.harm(t, dir)
			id := schemas.DownsampleOutputULID(meta.ULID, schemas.Res5m)
			_, err := Block(context.Background(), zerolog.Nop(), dir, meta, filepath.Join(t.TempDir(), id.String()), id, schemas.Res5m)
			if err == nil || !isInputError(err) {
				t.Errorf("err %v, want an input error", err)
			}
		})
	}

	dir, meta := rawBlock(t, 1)
	id := schemas.DownsampleOutputULID(meta.ULID, schemas.Res5m)
	_, err := Block(context.Background(), zerolog.Nop(), dir, meta, filepath.Join(t.TempDir(), id.String()), id, schemas.ResRaw)
	if err == nil || isInputError(err) {
		t.Errorf("raw to raw: err %v, want a usage error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Block(ctx, zerolog.Nop(), dir, meta, filepath.Join(t.TempDir(), id.String()), id, schemas.Res5m); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err %v", err)
	}
}

// TestBlockNativeHistograms downsamples a block holding a native-histogram counter that
// resets halfway, next to a float series, to 5m and then 1h.
func TestBlockNativeHistograms(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "raw")
	w, err := newBlockWriter(ctx, dir, index.NewStringListIter([]string{"__name__", "floats", "hist"}))
	if err != nil {
		t.Fatal(err)
	}
	const n = 480 // two hours of 15s scrapes
	var floatChunks, histChunks []chunks.Meta
	for j := range int64(n) {
		if j%120 == 0 {
			floatChunks = append(floatChunks, chunks.Meta{Chunk: chunkenc.NewXORChunk(), MinTime: j * 15_000})
			histChunks = append(histChunks, chunks.Meta{Chunk: chunkenc.NewHistogramChunk(), MinTime: j * 15_000})
		}
		fc, hc := &floatChunks[len(floatChunks)-1], &histChunks[len(histChunks)-1]
		fapp, _ := fc.Chunk.Appender()
		fapp.Append(0, j*15_000, float64(j))
		fc.MaxTime = j * 15_000
		// Bucket counts k+1 and k+1; the process restarts at sample 240.
		k := j % 240
		h := &histogram.Histogram{
			Count: uint64(2*k + 2), Sum: float64(k), Schema: 0,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{k + 1, 0},
		}
		if k == 0 && j > 0 {
			h.CounterResetHint = histogram.CounterReset
		}
		happ, _ := hc.Chunk.Appender()
		if nc, _, _, err := happ.AppendHistogram(nil, 0, j*15_000, h, true); err != nil || nc != nil {
			t.Fatalf("append histogram %d: %v", j, err)
		}
		hc.MaxTime = j * 15_000
	}
	if err := w.add(labels.FromStrings("__name__", "floats"), floatChunks); err != nil {
		t.Fatal(err)
	}
	if err := w.add(labels.FromStrings("__name__", "hist"), histChunks); err != nil {
		t.Fatal(err)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
	meta := block.Meta{BlockMeta: tsdb.BlockMeta{ULID: ulid.MustParse("01HKZ0000000000000000000AA"), MinTime: 0, MaxTime: n * 15_000, Version: 1}}
	meta.Thanos.Labels = externalLabels

	dir5m, res5 := downsampleDir(t, dir, meta, schemas.Res5m)
	dir1h, res1 := downsampleDir(t, dir5m, res5.Meta, schemas.Res1h)
	for _, lv := range []struct {
		name    string
		dir     string
		res     Result
		windows uint64
	}{{"5m", dir5m, res5, 24}, {"1h", dir1h, res1, 2}} {
		t.Run(lv.name, func(t *testing.T) {
			if st := lv.res.Meta.Stats; st.NumHistogramSamples != lv.windows || st.NumFloatSamples != lv.windows || lv.res.SkippedHistogramSeries != 0 {
				t.Errorf("stats %+v, skipped %d", st, lv.res.SkippedHistogramSeries)
			}
			series := readBlock(t, lv.dir)
			var count float64
			var last *histogram.FloatHistogram
			for _, m := range series[1].chunks {
				ac := m.Chunk.(*aggrchunk.Chunk)
				if !ac.IsHistogram() {
					t.Fatalf("%s chunk of the histogram series holds floats", lv.name)
				}
				got := decodeHistograms(t, m)
				for _, p := range got.count {
					count += p.v
				}
				c, _ := ac.Get(aggrchunk.Counter)
				it := c.Iterator(nil)
				for it.Next() == chunkenc.ValFloatHistogram {
					_, last = it.AtFloatHistogram(nil)
				}
			}
			// 480 histograms; the counter grows to 480, restarts at 2 and grows to 480 again.
			if count != n || last == nil || last.Count != 960 {
				t.Errorf("%v histograms, counter %v; want %d and count 960", count, last, n)
			}
		})
	}
}
