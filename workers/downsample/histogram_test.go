package downsample

import (
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
)

// fh is a schema-0 float histogram with positive buckets 0, 1, ... holding buckets.
func fh(count, sum float64, buckets ...float64) *histogram.FloatHistogram {
	return &histogram.FloatHistogram{
		Schema: 0, Count: count, Sum: sum,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: uint32(len(buckets))}},
		PositiveBuckets: buckets,
	}
}

// histogramChunk is an integer-histogram chunk with one {count 2, sum 1, buckets [1 1]}
// histogram at each pair's timestamp.
func histogramChunk(tb testing.TB, ps ...pair) chunkenc.Chunk {
	tb.Helper()
	c := chunkenc.NewHistogramChunk()
	var app chunkenc.Appender
	app, err := c.Appender()
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range ps {
		h := &histogram.Histogram{
			Count: 2, Sum: 1, Schema: 0,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []int64{1, 0}, // deltas: 1, 1
		}
		var nc chunkenc.Chunk
		if nc, _, app, err = app.AppendHistogram(nil, 0, p.t, h, true); err != nil || nc != nil {
			tb.Fatalf("append: new chunk %v, %v", nc != nil, err)
		}
	}
	return c
}

type histPoint struct {
	t int64
	h string // FloatHistogram.String of the compacted histogram
}

// histAggregates is one native-histogram downsampled chunk, decoded.
type histAggregates struct {
	mint, maxt   int64
	count        []pair
	sum, counter []histPoint
	schemas      []int32
}

func decodeHistograms(tb testing.TB, m chunks.Meta) histAggregates {
	tb.Helper()
	ac := m.Chunk.(*aggrchunk.Chunk)
	got := histAggregates{mint: m.MinTime, maxt: m.MaxTime}
	cnt, err := ac.Get(aggrchunk.Count)
	if err != nil {
		tb.Fatal(err)
	}
	got.count = pairs(tb, cnt.Iterator(nil))
	for _, a := range []aggrchunk.Aggr{aggrchunk.Min, aggrchunk.Max} {
		if _, err := ac.Get(a); err == nil {
			tb.Errorf("a histogram chunk has a %s aggregate", a)
		}
	}
	for a, dst := range map[aggrchunk.Aggr]*[]histPoint{aggrchunk.Sum: &got.sum, aggrchunk.Counter: &got.counter} {
		sub, err := ac.Get(a)
		if err != nil {
			tb.Fatal(err)
		}
		if sub.Encoding() != chunkenc.EncFloatHistogram {
			tb.Errorf("%s aggregate is %s", a, sub.Encoding())
		}
		it := sub.Iterator(nil)
		for it.Next() == chunkenc.ValFloatHistogram {
			t, h := it.AtFloatHistogram(nil)
			*dst = append(*dst, histPoint{t, h.Compact(0).String()})
			if a == aggrchunk.Sum {
				got.schemas = append(got.schemas, h.Schema)
			}
		}
		if err := it.Err(); err != nil {
			tb.Fatal(err)
		}
	}
	return got
}

func histSamples(ts []int64, hs ...*histogram.FloatHistogram) []sample {
	out := make([]sample, len(hs))
	for i, h := range hs {
		out[i] = sample{t: ts[i], fh: h}
	}
	return out
}

// TestDownsampleHistograms works native-histogram windows out by hand: per window the number
// of histograms, their sum, and the counter with the reset at minute 2 corrected.
func TestDownsampleHistograms(t *testing.T) {
	in := histSamples([]int64{0, minute, 2 * minute, 6 * minute},
		fh(2, 1, 1, 1), fh(4, 3, 2, 2), fh(1, 0.5, 1, 0), fh(3, 2, 2, 1))
	out, err := downsampleRaw(nil, in, res5m)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("%d chunks", len(out))
	}
	s := func(h *histogram.FloatHistogram) string { return h.Compact(0).String() }
	want := histAggregates{
		mint: 299_999, maxt: 6 * minute,
		count: []pair{{299_999, 3}, {6 * minute, 1}},
		sum:   []histPoint{{299_999, s(fh(7, 4.5, 4, 3))}, {6 * minute, s(fh(3, 2, 2, 1))}},
		// h0, +(h1-h0), a reset: +h2; then +(h3-h2).
		counter: []histPoint{{299_999, s(fh(5, 3.5, 3, 2))}, {6 * minute, s(fh(7, 5, 4, 3))}},
		schemas: []int32{0, 0},
	}
	if got := decodeHistograms(t, out[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	// To 1h with a second 5m chunk an hour later. As in Thanos, the second chunk's counter
	// starts from its raw value, 4, below the first one's corrected 7: read as a reset.
	next, err := downsampleRaw(nil, histSamples([]int64{61 * minute}, fh(4, 3, 2, 2)), res5m)
	if err != nil {
		t.Fatal(err)
	}
	chks := []*aggrchunk.Chunk{out[0].Chunk.(*aggrchunk.Chunk), next[0].Chunk.(*aggrchunk.Chunk)}
	hourly, _, err := downsampleAggr(nil, chks, out[0].MinTime, next[0].MaxTime, res5m, res1h, nil)
	if err != nil {
		t.Fatal(err)
	}
	want1h := histAggregates{
		mint: 60*minute - 1, maxt: 61 * minute,
		count:   []pair{{60*minute - 1, 4}, {61 * minute, 1}},
		sum:     []histPoint{{60*minute - 1, s(fh(10, 6.5, 6, 4))}, {61 * minute, s(fh(4, 3, 2, 2))}},
		counter: []histPoint{{60*minute - 1, s(fh(7, 5, 4, 3))}, {61 * minute, s(fh(11, 8, 6, 5))}},
		schemas: []int32{0, 0},
	}
	if len(hourly) != 1 {
		t.Fatalf("%d 1h chunks", len(hourly))
	}
	if got := decodeHistograms(t, hourly[0]); !reflect.DeepEqual(got, want1h) {
		t.Errorf("1h: got  %+v\nwant %+v", got, want1h)
	}

	// The default view is the average histogram of each window: sum / count.
	it := aggrchunk.SeriesIterator([]chunkenc.Chunk{out[0].Chunk}, nil)
	if it.Next() != chunkenc.ValFloatHistogram {
		t.Fatal("no average histogram")
	}
	if _, avg := it.AtFloatHistogram(nil); avg.Count != 7.0/3 || avg.Sum != 1.5 {
		t.Errorf("average %s, want count 7/3 and sum 1.5", avg)
	}
}

// TestDownsampleHistogramSchemas brings every histogram of a batch to its smallest schema.
func TestDownsampleHistogramSchemas(t *testing.T) {
	fine := &histogram.FloatHistogram{
		Schema: 1, Count: 4, Sum: 2,
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 4}},
		PositiveBuckets: []float64{1, 1, 1, 1},
	}
	out, err := downsampleRaw(nil, histSamples([]int64{0, minute, 2 * minute}, fh(2, 1, 1, 1), fine, fh(9, 5, 4, 5)), res5m)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeHistograms(t, out[0])
	if !reflect.DeepEqual(got.schemas, []int32{0}) || got.count[0].v != 3 {
		t.Errorf("schemas %v, count %v", got.schemas, got.count)
	}
	reduced, err := fine.CopyToSchema(0)
	if err != nil {
		t.Fatal(err)
	}
	sum := fh(2, 1, 1, 1)
	for _, h := range []*histogram.FloatHistogram{reduced, fh(9, 5, 4, 5)} {
		if _, _, _, err := sum.Add(h); err != nil {
			t.Fatal(err)
		}
	}
	if got.sum[0].h != sum.Compact(0).String() {
		t.Errorf("sum %s, want %s", got.sum[0].h, sum.Compact(0).String())
	}
}

// TestDownsampleGaugeHistograms keeps gauge histograms gauges: a smaller value is no reset,
// so the counter aggregate follows the last value.
func TestDownsampleGaugeHistograms(t *testing.T) {
	gauge := func(h *histogram.FloatHistogram) *histogram.FloatHistogram {
		h.CounterResetHint = histogram.GaugeType
		return h
	}
	out, err := downsampleRaw(nil, histSamples([]int64{0, minute}, gauge(fh(5, 5, 2, 3)), gauge(fh(2, 1, 1, 1))), res5m)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeHistograms(t, out[0])
	if want := fh(2, 1, 1, 1).Compact(0).String(); got.counter[0].h != want {
		t.Errorf("counter %s, want %s", got.counter[0].h, want)
	}
	sub, _ := out[0].Chunk.(*aggrchunk.Chunk).Get(aggrchunk.Counter)
	it := sub.Iterator(nil)
	it.Next()
	if _, h := it.AtFloatHistogram(nil); h.CounterResetHint != histogram.GaugeType {
		t.Errorf("counter hint %v, want gauge", h.CounterResetHint)
	}
}

// TestSeriesHistogramsLeftOut drops native histograms that cannot be aggregated together
// (custom bucket bounds mixed with exponential buckets) and keeps the rest of the block.
func TestSeriesHistogramsLeftOut(t *testing.T) {
	c := chunkenc.NewFloatHistogramChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	custom := &histogram.FloatHistogram{
		Schema: histogram.CustomBucketsSchema, Count: 1, Sum: 1, CustomValues: []float64{1, 2},
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{1},
	}
	if _, _, _, err := app.AppendFloatHistogram(nil, 0, minute, custom, true); err != nil {
		t.Fatal(err)
	}
	chks := []chunks.Meta{
		{Chunk: histogramChunk(t, pair{0, 0})},
		{Chunk: c},
		{Chunk: xorChunk(t, pair{10 * minute, 1})},
	}
	d := seriesDownsampler{res: res5m, log: zerolog.Nop()}
	out, err := d.series(labelsOf("mixed"), chks)
	if err != nil {
		t.Fatal(err)
	}
	if d.skippedHistograms != 1 || len(out) != 1 || out[0].Chunk.(*aggrchunk.Chunk).IsHistogram() {
		t.Errorf("skipped %d series, kept %d chunks", d.skippedHistograms, len(out))
	}
}
