package downsample

import (
	"math"
	"reflect"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/schemas"
)

type pair struct {
	t int64
	v float64
}

// aggregates is one downsampled chunk, decoded.
type aggregates struct {
	mint, maxt                    int64
	count, sum, min, max, counter []pair
}

func decode(tb testing.TB, m chunks.Meta) aggregates {
	tb.Helper()
	ac, ok := m.Chunk.(*aggrchunk.Chunk)
	if !ok {
		tb.Fatalf("got a %T, not a downsampled chunk", m.Chunk)
	}
	got := aggregates{mint: m.MinTime, maxt: m.MaxTime}
	for a, dst := range map[aggrchunk.Aggr]*[]pair{
		aggrchunk.Count: &got.count, aggrchunk.Sum: &got.sum, aggrchunk.Min: &got.min,
		aggrchunk.Max: &got.max, aggrchunk.Counter: &got.counter,
	} {
		sub, err := ac.Get(a)
		if err != nil {
			tb.Fatalf("%s: %v", a, err)
		}
		*dst = pairs(tb, sub.Iterator(nil))
	}
	return got
}

func pairs(tb testing.TB, it chunkenc.Iterator) []pair {
	tb.Helper()
	var out []pair
	for it.Next() == chunkenc.ValFloat {
		t, v := it.At()
		out = append(out, pair{t, v})
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func samples(ps ...pair) []sample {
	out := make([]sample, len(ps))
	for i, p := range ps {
		out[i] = sample{t: p.t, v: p.v}
	}
	return out
}

func xorChunk(tb testing.TB, ps ...pair) chunkenc.Chunk {
	tb.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		tb.Fatal(err)
	}
	for _, p := range ps {
		app.Append(0, p.t, p.v)
	}
	return c
}

func labelsOf(name string) labels.Labels { return labels.FromStrings(model.MetricNameLabel, name) }

const (
	minute = int64(60_000)
	res5m  = schemas.Res5m
	res1h  = schemas.Res1h
)

var stale = math.Float64frombits(value.StaleNaN)

// TestDownsampleRaw checks every aggregate of every window against values worked out by
// hand. Windows are [k·5m, (k+1)·5m); a window's sample sits at its last millisecond, or at
// the batch's last sample for the batch's final window. The counter starts with the batch's
// first raw sample and ends by repeating the last window's timestamp with the last raw value.
func TestDownsampleRaw(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []pair
		want []aggregates
	}{
		{
			name: "counter reset inside a window",
			in:   []pair{{0, 10}, {1 * minute, 20}, {2 * minute, 30}, {3 * minute, 5}, {4 * minute, 15}, {5 * minute, 25}, {6 * minute, 40}},
			want: []aggregates{{
				mint: 299_999, maxt: 360_000,
				count: []pair{{299_999, 5}, {360_000, 2}},
				sum:   []pair{{299_999, 80}, {360_000, 65}},
				min:   []pair{{299_999, 5}, {360_000, 25}},
				max:   []pair{{299_999, 30}, {360_000, 40}},
				// 10, +10, +10, reset +5, +10 = 45; +10, +15 = 70.
				counter: []pair{{0, 10}, {299_999, 45}, {360_000, 70}, {360_000, 40}},
			}},
		},
		{
			name: "NaN and stale markers dropped, empty windows skipped, reset across windows",
			in:   []pair{{0, 1}, {1 * minute, math.NaN()}, {2 * minute, stale}, {3 * minute, 3}, {15 * minute, 2}, {16 * minute, 4}},
			want: []aggregates{{
				mint: 299_999, maxt: 16 * minute,
				count:   []pair{{299_999, 2}, {16 * minute, 2}},
				sum:     []pair{{299_999, 4}, {16 * minute, 6}},
				min:     []pair{{299_999, 1}, {16 * minute, 2}},
				max:     []pair{{299_999, 3}, {16 * minute, 4}},
				counter: []pair{{0, 1}, {299_999, 3}, {16 * minute, 7}, {16 * minute, 4}},
			}},
		},
		{
			name: "one sample",
			in:   []pair{{42_000, 7}},
			want: []aggregates{{
				mint: 42_000, maxt: 42_000,
				count: []pair{{42_000, 1}}, sum: []pair{{42_000, 7}}, min: []pair{{42_000, 7}}, max: []pair{{42_000, 7}},
				counter: []pair{{42_000, 7}, {42_000, 7}, {42_000, 7}},
			}},
		},
		{
			name: "only NaN",
			in:   []pair{{0, math.NaN()}, {minute, stale}},
		},
		{
			name: "negative values and a window ending exactly on a sample",
			in:   []pair{{299_999, -2}, {300_000, -5}, {599_999, -1}},
			want: []aggregates{{
				mint: 299_999, maxt: 599_999,
				count: []pair{{299_999, 1}, {599_999, 2}},
				sum:   []pair{{299_999, -2}, {599_999, -6}},
				min:   []pair{{299_999, -2}, {599_999, -5}},
				max:   []pair{{299_999, -2}, {599_999, -1}},
				// -2; -5 < -2 is a reset: -2 + -5 = -7; -1 ≥ -5: +4 = -3.
				counter: []pair{{299_999, -2}, {299_999, -2}, {599_999, -3}, {599_999, -1}},
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := downsampleRaw(nil, samples(tc.in...), res5m)
			if err != nil {
				t.Fatal(err)
			}
			var got []aggregates
			for _, m := range out {
				got = append(got, decode(t, m))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestDownsampleRawChunks follows a series over two output chunks: 721 samples a minute
// apart are more than 140 windows, so two chunks; the first batch (361 samples) is extended
// to the end of its last window, so chunk one holds minutes 0–364 and chunk two 365–720.
// The counter resets to 0 exactly at minute 365, the first sample of chunk two: only the
// last raw value kept at the end of chunk one shows the reset.
func TestDownsampleRawChunks(t *testing.T) {
	var in []pair
	for i := range int64(721) {
		v := float64(i)
		if i >= 365 {
			v = float64(i - 365)
		}
		in = append(in, pair{i * minute, v})
	}
	out, err := downsampleRaw(nil, samples(in...), res5m)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 {
		t.Fatalf("%d chunks, want 2", len(out))
	}

	// want builds a chunk's aggregates from windows k of minutes 5k..5k+4 whose values are
	// 5(k-k0)+j, j=0..4, cut at minute lastMin.
	want := func(k0, k1, lastMin int64) aggregates {
		a := aggregates{counter: []pair{{k0 * 5 * minute, 0}}}
		for k := k0; k <= k1; k++ {
			base := float64(5 * (k - k0))
			n := min(int64(5), lastMin-5*k+1)
			ts := min((5*k+5)*minute-1, lastMin*minute)
			sum := 0.0
			for j := range n {
				sum += base + float64(j)
			}
			a.count = append(a.count, pair{ts, float64(n)})
			a.sum = append(a.sum, pair{ts, sum})
			a.min = append(a.min, pair{ts, base})
			a.max = append(a.max, pair{ts, base + float64(n-1)})
			a.counter = append(a.counter, pair{ts, base + float64(n-1)})
		}
		a.mint, a.maxt = a.count[0].t, a.count[len(a.count)-1].t
		a.counter = append(a.counter, pair{a.maxt, a.max[len(a.max)-1].v})
		return a
	}
	for i, w := range []aggregates{want(0, 72, 364), want(73, 144, 720)} {
		if got := decode(t, out[i]); !reflect.DeepEqual(got, w) {
			t.Errorf("chunk %d:\ngot  %+v\nwant %+v", i, got, w)
		}
	}

	// Read as one counter, the reset between the chunks costs nothing: 364 + 355.
	var its []chunkenc.Iterator
	for _, m := range out {
		c, _ := m.Chunk.(*aggrchunk.Chunk).Get(aggrchunk.Counter)
		its = append(its, c.Iterator(nil))
	}
	ps := pairs(t, aggrchunk.NewCounterIterator(its...))
	if last := ps[len(ps)-1]; last != (pair{720 * minute, 719}) {
		t.Errorf("counter ends at %v, want 719 at minute 720", last)
	}
	if ps[74] != (pair{365 * minute, 364}) {
		t.Errorf("counter at the second chunk's first sample: %v, want 364 at minute 365", ps[74])
	}
}

// TestDownsampleAggr re-aggregates two 5m chunks to 1h by hand. The first chunk's counter
// reached 70 through a reset, its raw value ending at 12; the second starts at raw 5 < 12,
// another reset.
func TestDownsampleAggr(t *testing.T) {
	const h = int64(3_600_000)
	first := aggrchunk.Encode([aggrchunk.NumAggrs]chunkenc.Chunk{
		xorChunk(t, pair{299_999, 5}, pair{599_999, 5}),
		xorChunk(t, pair{299_999, 50}, pair{599_999, 100}),
		xorChunk(t, pair{299_999, 1}, pair{599_999, 8}),
		xorChunk(t, pair{299_999, 20}, pair{599_999, 30}),
		xorChunk(t, pair{10_000, 3}, pair{299_999, 40}, pair{599_999, 70}, pair{599_999, 12}),
	})
	second := aggrchunk.Encode([aggrchunk.NumAggrs]chunkenc.Chunk{
		xorChunk(t, pair{h + 299_999, 4}),
		xorChunk(t, pair{h + 299_999, 60}),
		xorChunk(t, pair{h + 299_999, 2}),
		xorChunk(t, pair{h + 299_999, 25}),
		xorChunk(t, pair{h + 60_000, 5}, pair{h + 299_999, 25}, pair{h + 299_999, 9}),
	})
	out, _, err := downsampleAggr(nil, []*aggrchunk.Chunk{first, second}, 299_999, h+299_999, res5m, res1h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("%d chunks, want 1", len(out))
	}
	want := aggregates{
		mint: h - 1, maxt: h + 299_999,
		count: []pair{{h - 1, 10}, {h + 299_999, 4}},
		sum:   []pair{{h - 1, 150}, {h + 299_999, 60}},
		min:   []pair{{h - 1, 1}, {h + 299_999, 2}},
		max:   []pair{{h - 1, 30}, {h + 299_999, 25}},
		// Read as one counter: 3, 40, 70, then 5 after the reset: 75, then 95. The last
		// raw value, 9, is kept.
		counter: []pair{{10_000, 3}, {h - 1, 70}, {h + 299_999, 95}, {h + 299_999, 9}},
	}
	if got := decode(t, out[0]); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestTargetChunkCount(t *testing.T) {
	const day = 24 * 3600 * 1000
	for _, tc := range []struct {
		name                   string
		mint, maxt, inRes, res int64
		count                  int
		want                   int
	}{
		// 576 windows: 5 chunks of at most 140.
		{"2d of 15s scrapes to 5m", 0, 2*day - 15_000, rawResolution, res5m, 11520, 5},
		// 337 windows: 3 chunks.
		{"14d of 5m to 1h", 0, 14*day - 1, res5m, res1h, 4032, 3},
		// 100 samples fill a 30th of the range: 21 windows.
		{"sparse series", 0, 2 * day, rawResolution, res5m, 100, 1},
		{"one sample", 5, 5, rawResolution, res5m, 1, 1},
	} {
		if got := targetChunkCount(tc.mint, tc.maxt, tc.inRes, tc.res, tc.count); got != tc.want {
			t.Errorf("%s: %d chunks, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSeriesRaw reads raw chunks as a block holds them: a sample going back in time and a
// stale marker are dropped, and a native-histogram chunk between float chunks makes three
// runs downsampled apart, as in Thanos.
func TestSeriesRaw(t *testing.T) {
	hist := histogramChunk(t, pair{2 * minute, 0}, pair{3 * minute, 0})
	chks := []chunks.Meta{
		{Chunk: xorChunk(t, pair{0, 1}, pair{minute, 2}, pair{30_000, 9}, pair{2 * minute, stale})},
		{Chunk: hist},
		{Chunk: xorChunk(t, pair{10 * minute, 3})},
	}
	d := seriesDownsampler{res: res5m, log: zerolog.Nop()}
	out, err := d.series(labelsOf("a"), chks)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 3 || !out[1].Chunk.(*aggrchunk.Chunk).IsHistogram() || out[1].MinTime != 3*minute {
		t.Fatalf("got %d chunks, want float, histogram, float: %+v", len(out), out)
	}
	want := []aggregates{
		{
			mint: minute, maxt: minute,
			count: []pair{{minute, 2}}, sum: []pair{{minute, 3}}, min: []pair{{minute, 1}}, max: []pair{{minute, 2}},
			counter: []pair{{0, 1}, {minute, 2}, {minute, 2}},
		},
		{
			mint: 10 * minute, maxt: 10 * minute,
			count: []pair{{10 * minute, 1}}, sum: []pair{{10 * minute, 3}}, min: []pair{{10 * minute, 3}}, max: []pair{{10 * minute, 3}},
			counter: []pair{{10 * minute, 3}, {10 * minute, 3}, {10 * minute, 3}},
		},
	}
	got := []aggregates{decode(t, out[0]), decode(t, out[2])}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// TestSeriesDownsampled re-aggregates a 5m series that holds a raw chunk (as old Thanos
// versions wrote) and an empty one: the raw chunk is downsampled to 5m first, the empty one
// dropped.
func TestSeriesDownsampled(t *testing.T) {
	raw5m, err := downsampleRaw(nil, samples(pair{0, 1}, pair{minute, 2}), res5m)
	if err != nil {
		t.Fatal(err)
	}
	chks := []chunks.Meta{
		raw5m[0],
		{Chunk: chunkenc.NewXORChunk(), MinTime: 10 * minute, MaxTime: 10 * minute},
		{Chunk: xorChunk(t, pair{20 * minute, 5}, pair{21 * minute, 1}), MinTime: 20 * minute, MaxTime: 21 * minute},
	}
	d := seriesDownsampler{inRes: res5m, res: res1h, log: zerolog.Nop()}
	out, err := d.series(labelsOf("a"), chks)
	if err != nil {
		t.Fatal(err)
	}
	want := []aggregates{{
		mint: 21 * minute, maxt: 21 * minute,
		count: []pair{{21 * minute, 4}}, sum: []pair{{21 * minute, 9}}, min: []pair{{21 * minute, 1}}, max: []pair{{21 * minute, 5}},
		// 1, 2, then 5 (growth: +3) and 1 (a reset: +1) in the raw chunk.
		counter: []pair{{0, 1}, {21 * minute, 6}, {21 * minute, 1}},
	}}
	var got []aggregates
	for _, m := range out {
		got = append(got, decode(t, m))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}
