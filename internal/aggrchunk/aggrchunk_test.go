package aggrchunk

import (
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

type pair struct {
	t int64
	v float64
}

func xor(tb testing.TB, ps ...pair) chunkenc.Chunk {
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

func floatHistograms(tb testing.TB, ts ...int64) chunkenc.Chunk {
	tb.Helper()
	c := chunkenc.NewFloatHistogramChunk()
	var app chunkenc.Appender
	app, err := c.Appender()
	if err != nil {
		tb.Fatal(err)
	}
	for i, t := range ts {
		h := &histogram.FloatHistogram{
			Count: float64(10 * (i + 1)), Sum: float64(i + 1), Schema: 0,
			PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []float64{float64(4 * (i + 1)), float64(6 * (i + 1))},
		}
		var nc chunkenc.Chunk
		if nc, _, app, err = app.AppendFloatHistogram(nil, 0, t, h, true); err != nil || nc != nil {
			tb.Fatalf("append histogram: new chunk %v, %v", nc != nil, err)
		}
	}
	return c
}

// drain reads the float samples of it.
func drain(tb testing.TB, it chunkenc.Iterator) []pair {
	tb.Helper()
	var out []pair
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		if vt != chunkenc.ValFloat {
			tb.Fatalf("got a %s sample", vt)
		}
		t, v := it.At()
		out = append(out, pair{t, v})
	}
	if err := it.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestEncodeRoundTrip(t *testing.T) {
	floats := [NumAggrs]chunkenc.Chunk{
		xor(t, pair{299_999, 20}, pair{599_999, 19}),
		xor(t, pair{299_999, 210}, pair{599_999, 190.5}),
		xor(t, pair{299_999, 1}, pair{599_999, -3}),
		xor(t, pair{299_999, 17}, pair{599_999, 12}),
		xor(t, pair{15_000, 4}, pair{299_999, 40}, pair{599_999, 55}, pair{599_999, 7}),
	}
	histograms := [NumAggrs]chunkenc.Chunk{
		Count:   xor(t, pair{299_999, 20}, pair{599_999, 20}),
		Sum:     floatHistograms(t, 299_999, 599_999),
		Counter: floatHistograms(t, 299_999, 599_999),
	}
	for _, tc := range []struct {
		name      string
		subs      [NumAggrs]chunkenc.Chunk
		samples   int
		histogram bool
	}{
		{"floats", floats, 2, false},
		{"native histograms", histograms, 2, true},
		{"count only", [NumAggrs]chunkenc.Chunk{Count: floats[Count]}, 2, false},
		{"empty", [NumAggrs]chunkenc.Chunk{}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := Encode(tc.subs)
			c := FromData(append([]byte(nil), enc.Bytes()...))
			if c.Encoding() != chunkenc.Encoding(0xFF) {
				t.Fatalf("encoding %d", c.Encoding())
			}
			if got := c.NumSamples(); got != tc.samples {
				t.Errorf("NumSamples = %d, want %d", got, tc.samples)
			}
			if got := c.IsHistogram(); got != tc.histogram {
				t.Errorf("IsHistogram = %v", got)
			}
			for a := range Aggr(NumAggrs) {
				sub, err := c.Get(a)
				if tc.subs[a] == nil {
					if !errors.Is(err, ErrAbsent) {
						t.Errorf("%s: err %v, want ErrAbsent", a, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", a, err)
				}
				if sub.Encoding() != tc.subs[a].Encoding() || !reflect.DeepEqual(sub.Bytes(), tc.subs[a].Bytes()) {
					t.Errorf("%s: got %s %x, want %s %x", a, sub.Encoding(), sub.Bytes(), tc.subs[a].Encoding(), tc.subs[a].Bytes())
				}
			}
		})
	}
}

func TestEncodeLayout(t *testing.T) {
	cnt := xor(t, pair{1, 1})
	got := Encode([NumAggrs]chunkenc.Chunk{Count: cnt}).Bytes()
	want := append([]byte{byte(len(cnt.Bytes())), byte(chunkenc.EncXOR)}, cnt.Bytes()...)
	want = append(want, 0, 0, 0, 0) // sum, min, max, counter absent
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %x, want %x", got, want)
	}
}

func TestMalformed(t *testing.T) {
	valid := Encode([NumAggrs]chunkenc.Chunk{Count: xor(t, pair{1, 1}), Sum: xor(t, pair{1, 2})}).Bytes()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"truncated sub-chunk", valid[:5]},
		{"missing trailing lengths", valid[:len(valid)-2]},
		{"bad varint", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := FromData(tc.data)
			if _, err := c.Get(Counter); err == nil || errors.Is(err, ErrAbsent) {
				t.Errorf("Get(counter) err = %v, want a format error", err)
			}
			if n := c.NumSamples(); n != 0 && tc.name != "missing trailing lengths" {
				t.Errorf("NumSamples = %d", n)
			}
		})
	}
}

// TestPool writes a downsampled chunk and a raw one with Prometheus' chunk writer and reads
// them back with its reader: only with NewPool does the 0xFF chunk come back.
func TestPool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "chunks")
	w, err := chunks.NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	aggr := Encode([NumAggrs]chunkenc.Chunk{Count: xor(t, pair{299_999, 3}), Counter: xor(t, pair{0, 1}, pair{299_999, 3}, pair{299_999, 3})})
	raw := xor(t, pair{0, 1}, pair{15_000, 2})
	metas := []chunks.Meta{{Chunk: aggr, MinTime: 299_999, MaxTime: 299_999}, {Chunk: raw, MinTime: 0, MaxTime: 15_000}}
	if err := w.WriteChunks(metas...); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := chunks.NewDirReader(dir, NewPool())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, m := range metas {
		c, _, err := r.ChunkOrIterable(m)
		if err != nil {
			t.Fatal(err)
		}
		if c.Encoding() != m.Chunk.Encoding() || !reflect.DeepEqual(c.Bytes(), m.Chunk.Bytes()) {
			t.Errorf("read %s chunk %x, wrote %s %x", c.Encoding(), c.Bytes(), m.Chunk.Encoding(), m.Chunk.Bytes())
		}
		if _, ok := c.(*Chunk); ok != (m.Chunk.Encoding() == Encoding) {
			t.Errorf("read a %T for a %s chunk", c, m.Chunk.Encoding())
		}
	}

	stock, err := chunks.NewDirReader(dir, chunkenc.NewPool())
	if err != nil {
		t.Fatal(err)
	}
	defer stock.Close()
	if _, _, err := stock.ChunkOrIterable(metas[0]); err == nil {
		t.Error("Prometheus' own pool read a 0xFF chunk")
	}
}

func TestCounterIterator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks [][]pair
		want   []pair
		raw    float64
	}{
		{
			name:   "raw counter with a reset",
			chunks: [][]pair{{{0, 5}, {10, 8}, {20, 2}, {30, 6}}},
			want:   []pair{{0, 5}, {10, 8}, {20, 10}, {30, 14}},
			raw:    6,
		},
		{
			name: "aggregates: reset between chunks found by the last raw value",
			// The first chunk's counter ends at 70 but its raw counter at 12; the next chunk
			// starts at 5 < 12, a reset, so 5 counts in full.
			chunks: [][]pair{
				{{10_000, 3}, {299_999, 40}, {599_999, 70}, {599_999, 12}},
				{{660_000, 5}, {899_999, 25}, {899_999, 9}},
			},
			want: []pair{{10_000, 3}, {299_999, 40}, {599_999, 70}, {660_000, 75}, {899_999, 95}},
			raw:  9,
		},
		{
			name: "aggregates: growth between chunks",
			chunks: [][]pair{
				{{0, 100}, {299_999, 130}, {299_999, 130}},
				{{300_000, 131}, {599_999, 150}, {599_999, 150}},
			},
			want: []pair{{0, 100}, {299_999, 130}, {300_000, 131}, {599_999, 150}},
			raw:  150,
		},
		{
			name:   "NaN and overlap skipped",
			chunks: [][]pair{{{0, 1}, {10, math.NaN()}, {20, 3}}, {{15, 100}, {20, 3}, {30, 4}}},
			want:   []pair{{0, 1}, {20, 3}, {30, 4}},
			raw:    4,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var its []chunkenc.Iterator
			for _, c := range tc.chunks {
				its = append(its, xor(t, c...).Iterator(nil))
			}
			it := NewCounterIterator(its...)
			if got := drain(t, it); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if it.LastRaw() != tc.raw {
				t.Errorf("LastRaw = %v, want %v", it.LastRaw(), tc.raw)
			}
		})
	}
}

func TestIteratorSeek(t *testing.T) {
	chk := Encode([NumAggrs]chunkenc.Chunk{
		Count:   xor(t, pair{100, 2}, pair{200, 4}, pair{300, 1}),
		Sum:     xor(t, pair{100, 10}, pair{200, 2}, pair{300, 7}),
		Min:     xor(t, pair{100, 4}, pair{200, 0}, pair{300, 7}),
		Max:     xor(t, pair{100, 6}, pair{200, 1}, pair{300, 7}),
		Counter: xor(t, pair{50, 9}, pair{100, 12}, pair{200, 2}, pair{300, 3}, pair{300, 3}),
	})
	for _, tc := range []struct {
		aggrs []Aggr
		seek  int64
		want  []pair
	}{
		{nil, 150, []pair{{200, 0.5}, {300, 7}}},
		{[]Aggr{Min}, 200, []pair{{200, 0}, {300, 7}}},
		{[]Aggr{Counter}, 150, []pair{{200, 14}, {300, 15}}},
		{[]Aggr{Count}, 301, nil},
	} {
		it := SeriesIterator([]chunkenc.Chunk{chk}, tc.aggrs)
		var got []pair
		if it.Seek(tc.seek) == chunkenc.ValFloat {
			tt, v := it.At()
			got = append(got, pair{tt, v})
			got = append(got, drain(t, it)...)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v from %d: got %v, want %v", tc.aggrs, tc.seek, got, tc.want)
		}
		if it.Seek(0) != chunkenc.ValNone && len(tc.want) == 0 {
			t.Errorf("%v: Seek back found a sample after the end", tc.aggrs)
		}
	}
}

func TestSeriesIterator(t *testing.T) {
	first := Encode([NumAggrs]chunkenc.Chunk{
		Count:   xor(t, pair{299_999, 2}, pair{599_999, 4}),
		Sum:     xor(t, pair{299_999, 10}, pair{599_999, 2}),
		Min:     xor(t, pair{299_999, 4}, pair{599_999, 0}),
		Max:     xor(t, pair{299_999, 6}, pair{599_999, 1}),
		Counter: xor(t, pair{0, 9}, pair{299_999, 12}, pair{599_999, 20}, pair{599_999, 2}),
	})
	second := Encode([NumAggrs]chunkenc.Chunk{
		Count:   xor(t, pair{899_999, 1}),
		Sum:     xor(t, pair{899_999, 5}),
		Min:     xor(t, pair{899_999, 5}),
		Max:     xor(t, pair{899_999, 5}),
		Counter: xor(t, pair{600_000, 1}, pair{899_999, 4}, pair{899_999, 4}),
	})
	// A raw chunk after the downsampled ones (a series continued in a raw block).
	raw := xor(t, pair{900_000, 6}, pair{915_000, 1})
	chks := []chunkenc.Chunk{first, second, raw}
	for _, tc := range []struct {
		fn   string
		want []pair
	}{
		{"min_over_time", []pair{{299_999, 4}, {599_999, 0}, {899_999, 5}, {900_000, 6}, {915_000, 1}}},
		{"max_over_time", []pair{{299_999, 6}, {599_999, 1}, {899_999, 5}, {900_000, 6}, {915_000, 1}}},
		{"count_over_time", []pair{{299_999, 2}, {599_999, 4}, {899_999, 1}, {900_000, 6}, {915_000, 1}}},
		{"sum_over_time", []pair{{299_999, 10}, {599_999, 2}, {899_999, 5}, {900_000, 6}, {915_000, 1}}},
		// 2 → 1 is a reset between chunks; 4 → 6 growth into the raw chunk; 6 → 1 a reset.
		{"rate", []pair{{0, 9}, {299_999, 12}, {599_999, 20}, {600_000, 21}, {899_999, 24}, {900_000, 26}, {915_000, 27}}},
		{"", []pair{{299_999, 5}, {599_999, 0.5}, {899_999, 5}, {900_000, 6}, {915_000, 1}}},
		{"sum", []pair{{299_999, 5}, {599_999, 0.5}, {899_999, 5}, {900_000, 6}, {915_000, 1}}},
	} {
		t.Run(tc.fn, func(t *testing.T) {
			if got := drain(t, SeriesIterator(chks, AggrsForFunc(tc.fn))); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	// A chunk without min (native histograms) cannot answer min_over_time.
	noMin := Encode([NumAggrs]chunkenc.Chunk{Count: xor(t, pair{1, 1}), Sum: xor(t, pair{1, 1})})
	it := SeriesIterator([]chunkenc.Chunk{noMin}, []Aggr{Min})
	if it.Next() != chunkenc.ValNone || !errors.Is(it.Err(), ErrAbsent) {
		t.Errorf("min of a chunk without min: err %v", it.Err())
	}
}

func TestAverageOfHistograms(t *testing.T) {
	chk := Encode([NumAggrs]chunkenc.Chunk{
		Count:   xor(t, pair{100, 2}, pair{200, 4}),
		Sum:     floatHistograms(t, 100, 200),
		Counter: floatHistograms(t, 100, 200),
	})
	it := chk.Iterator(nil)
	for i, want := range []float64{5, 5} { // counts 10 and 20 over 2 and 4 windows
		if vt := it.Next(); vt != chunkenc.ValFloatHistogram {
			t.Fatalf("sample %d: %s", i, vt)
		}
		_, fh := it.AtFloatHistogram(nil)
		if fh.Count != want {
			t.Errorf("sample %d: count %v, want %v", i, fh.Count, want)
		}
	}
	if it.Next() != chunkenc.ValNone || it.Err() != nil {
		t.Errorf("trailing sample or error %v", it.Err())
	}
}

func TestAggrsForFunc(t *testing.T) {
	for fn, want := range map[string][]Aggr{
		"min_over_time":      {Min},
		"min":                {Min},
		"max_over_time":      {Max},
		"count_over_time":    {Count},
		"sum_over_time":      {Sum},
		"sum":                {Count, Sum},
		"rate":               {Counter},
		"increase":           {Counter},
		"irate":              {Counter},
		"resets":             {Counter},
		"avg_over_time":      {Count, Sum},
		"quantile_over_time": {Count, Sum},
		"":                   {Count, Sum},
	} {
		if got := AggrsForFunc(fn); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %v, want %v", fn, got, want)
		}
	}
}

func TestCounterIteratorSkipsStaleMarkers(t *testing.T) {
	it := NewCounterIterator(xor(t, pair{0, 1}, pair{10, math.Float64frombits(value.StaleNaN)}, pair{20, 2}).Iterator(nil))
	if got, want := drain(t, it), []pair{{0, 1}, {20, 2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
