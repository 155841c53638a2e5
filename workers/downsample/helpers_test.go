package downsample

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/schemas"
)

// externalLabels are the producer labels of every test block.
var externalLabels = map[string]string{"cluster": "test", "replica": "a"}

// rawBlock writes one raw block of n synthetic series (half counters that reset every 6
// to 30 hours, half gauges) scraped every 15s over two days, as the 2d compaction level
// holds them, and returns its directory and meta with a Thanos section.
func rawBlock(tb testing.TB, n int) (string, block.Meta) {
	tb.Helper()
	dir := tb.TempDir()
	metas, err := synth.WriteBlocks(context.Background(), dir, synth.Spec{
		Series: n, Span: 48 * time.Hour, BlockRange: 48 * time.Hour,
		Start: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(metas) != 1 {
		tb.Fatalf("%d blocks, want 1", len(metas))
	}
	bdir := filepath.Join(dir, metas[0].ULID.String())
	meta, err := block.ReadMetaFile(bdir)
	if err != nil {
		tb.Fatal(err)
	}
	meta.Thanos.Labels = externalLabels
	meta.Thanos.Source = block.SourceSidecar
	meta.Compaction.Level = 3
	if err := block.WriteMetaFile(bdir, meta); err != nil {
		tb.Fatal(err)
	}
	return bdir, meta
}

// downsampleDir runs Block on the block in dir into a new directory.
func downsampleDir(tb testing.TB, dir string, meta block.Meta, resolution int64) (string, Result) {
	tb.Helper()
	id := schemas.DownsampleOutputULID(meta.ULID, resolution)
	out := filepath.Join(tb.TempDir(), id.String())
	res, err := Block(context.Background(), zerolog.Nop(), dir, meta, out, id, resolution)
	if err != nil {
		tb.Fatal(err)
	}
	return out, res
}

// blockSeries is one series of a block: its labels and its chunks, read with the pool
// that understands downsampled chunks.
type blockSeries struct {
	lset   labels.Labels
	chunks []chunks.Meta
}

func readBlock(tb testing.TB, dir string) []blockSeries {
	tb.Helper()
	b, err := tsdb.OpenBlock(nil, dir, aggrchunk.NewPool(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	ir, err := b.Index()
	if err != nil {
		tb.Fatal(err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		tb.Fatal(err)
	}
	defer cr.Close()
	name, val := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), name, val)
	if err != nil {
		tb.Fatal(err)
	}
	var (
		out     []blockSeries
		builder labels.ScratchBuilder
	)
	for p.Next() {
		var chks []chunks.Meta
		if err := ir.Series(p.At(), &builder, &chks); err != nil {
			tb.Fatal(err)
		}
		for i := range chks {
			c, _, err := cr.ChunkOrIterable(chks[i])
			if err != nil {
				tb.Fatal(err)
			}
			// Copy: the reader's bytes are mmapped and unmapped when the block closes.
			chks[i].Chunk = copyChunk(tb, c)
		}
		out = append(out, blockSeries{lset: builder.Labels(), chunks: chks})
	}
	if err := p.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func copyChunk(tb testing.TB, c chunkenc.Chunk) chunkenc.Chunk {
	b := append([]byte(nil), c.Bytes()...)
	if c.Encoding() == aggrchunk.Encoding {
		return aggrchunk.FromData(b)
	}
	cc, err := chunkenc.FromData(c.Encoding(), b)
	if err != nil {
		tb.Fatal(err)
	}
	return cc
}

// summary is what every resolution must agree on about a series.
type summary struct {
	count    float64
	sum      float64
	min, max float64
	// first and last raw values, and the counter with resets applied at the end.
	first, last, total float64
}

// rawSummary summarises raw chunks, without stale markers.
func rawSummary(tb testing.TB, chks []chunks.Meta) summary {
	tb.Helper()
	s := summary{min: math.Inf(1), max: math.Inf(-1)}
	var its []chunkenc.Iterator
	for _, c := range chks {
		it := c.Chunk.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			if value.IsStaleNaN(v) {
				continue
			}
			if s.count == 0 {
				s.first = v
			}
			s.count++
			s.sum += v
			s.min = math.Min(s.min, v)
			s.max = math.Max(s.max, v)
			s.last = v
		}
		its = append(its, c.Chunk.Iterator(nil))
	}
	s.total = lastValue(tb, aggrchunk.NewCounterIterator(its...))
	return s
}

// aggrSummary summarises downsampled chunks.
func aggrSummary(tb testing.TB, chks []chunks.Meta) summary {
	tb.Helper()
	s := summary{min: math.Inf(1), max: math.Inf(-1)}
	var counters []chunkenc.Iterator
	for _, m := range chks {
		a := decode(tb, m)
		for _, p := range a.count {
			s.count += p.v
		}
		for _, p := range a.sum {
			s.sum += p.v
		}
		for _, p := range a.min {
			s.min = math.Min(s.min, p.v)
		}
		for _, p := range a.max {
			s.max = math.Max(s.max, p.v)
		}
		c, err := m.Chunk.(*aggrchunk.Chunk).Get(aggrchunk.Counter)
		if err != nil {
			tb.Fatal(err)
		}
		counters = append(counters, c.Iterator(nil))
	}
	first, _ := chks[0].Chunk.(*aggrchunk.Chunk).Get(aggrchunk.Counter)
	s.first = pairs(tb, first.Iterator(nil))[0].v
	last := decode(tb, chks[len(chks)-1]).counter
	s.last = last[len(last)-1].v
	s.total = lastValue(tb, aggrchunk.NewCounterIterator(counters...))
	return s
}

func lastValue(tb testing.TB, it chunkenc.Iterator) float64 {
	tb.Helper()
	v := math.NaN()
	for it.Next() == chunkenc.ValFloat {
		_, v = it.At()
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	return v
}

// nearlyEqual reports whether a and b agree to a relative 1e-9: sums of many floats in another
// order differ in their last bits.
func nearlyEqual(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}
