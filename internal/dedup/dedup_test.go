package dedup

import (
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

type pt struct {
	t int64
	v float64
}

// sample is a float sample for storage.NewListSeriesIterator.
type sample pt

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.v }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }

type samples []pt

func (s samples) Get(i int) chunks.Sample { return sample(s[i]) }
func (s samples) Len() int                { return len(s) }

func iter(pts []pt) chunkenc.Iterator { return storage.NewListSeriesIterator(samples(pts)) }

// every returns samples from start to end (s, inclusive) every step s, valued by f.
func every(start, end, step int64, f func(t int64) float64) []pt {
	var out []pt
	for t := start; t <= end; t += step {
		out = append(out, pt{t * 1000, f(t)})
	}
	return out
}

func ts(secs ...int64) []int64 {
	out := make([]int64, len(secs))
	for i, s := range secs {
		out[i] = s * 1000
	}
	return out
}

func collect(t *testing.T, it chunkenc.Iterator) []pt {
	t.Helper()
	var out []pt
	for it.Next() == chunkenc.ValFloat {
		tt, v := it.At()
		out = append(out, pt{tt, v})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func times(pts []pt) []int64 {
	out := make([]int64, len(pts))
	for i, p := range pts {
		out[i] = p.t
	}
	return out
}

func TestIteratorTimestamps(t *testing.T) {
	secs := func(t int64) float64 { return float64(t) }
	for _, tc := range []struct {
		name     string
		replicas [][]pt
		want     []int64
	}{
		{
			name:     "one replica is passed through",
			replicas: [][]pt{every(0, 60, 15, secs)},
			want:     ts(0, 15, 30, 45, 60),
		},
		{
			name:     "no replicas",
			replicas: nil,
			want:     nil,
		},
		{
			name:     "identical replicas give one copy",
			replicas: [][]pt{every(0, 60, 15, secs), every(0, 60, 15, secs)},
			want:     ts(0, 15, 30, 45, 60),
		},
		{
			name:     "offset replicas: stick to the one that starts first",
			replicas: [][]pt{every(0, 90, 15, secs), every(5, 95, 15, secs)},
			want:     ts(0, 15, 30, 45, 60, 75, 90),
		},
		{
			name:     "the later starting replica is followed when it is listed first",
			replicas: [][]pt{every(5, 95, 15, secs), every(0, 90, 15, secs)},
			want:     ts(0, 15, 30, 45, 60, 75, 90),
		},
		{
			// After A's sample at 60 B is seeked to 60+1+2*15 s, so B's 65 and 80 are
			// skipped; once on B, A (back at 180) is penalised and B is kept.
			name:     "gap in the first replica switches to the second and stays there",
			replicas: [][]pt{append(every(0, 60, 15, secs), every(180, 210, 15, secs)...), every(5, 215, 15, secs)},
			want:     ts(0, 15, 30, 45, 60, 95, 110, 125, 140, 155, 170, 185, 200, 215),
		},
		{
			name:     "first replica ends: the other is picked past the penalty",
			replicas: [][]pt{every(0, 15, 15, secs), every(5, 50, 15, secs)},
			want:     ts(0, 15, 50),
		},
		{
			name:     "first replica starts late: the other is used until it has a gap",
			replicas: [][]pt{every(100, 160, 15, secs), append(every(0, 60, 15, secs), every(200, 230, 15, secs)...)},
			// B until 60; A from 100 (B is seeked past its gap) to its end; then B again.
			want: ts(0, 15, 30, 45, 60, 100, 115, 130, 145, 160, 200, 215, 230),
		},
		{
			name: "three replicas fold left: gaps in two are filled by the third",
			replicas: [][]pt{
				every(0, 30, 15, secs),
				every(1, 1, 15, secs),
				every(2, 302, 15, secs),
			},
			// merge(A, B) is A, as B's one sample is within the initial penalty; C then
			// fills in after A's end at 30s, from 30+1+2*15 s on.
			want: ts(0, 15, 30, 62, 77, 92, 107, 122, 137, 152, 167, 182, 197, 212, 227, 242, 257, 272, 287, 302),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			its := make([]chunkenc.Iterator, len(tc.replicas))
			for i, r := range tc.replicas {
				its[i] = iter(r)
			}
			got := times(collect(t, NewIterator(its...)))
			if !slices.Equal(got, tc.want) {
				t.Errorf("timestamps\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestIteratorTiesPickFirstReplica(t *testing.T) {
	a := every(0, 60, 15, func(int64) float64 { return 1 })
	b := every(0, 60, 15, func(int64) float64 { return 2 })
	for _, p := range collect(t, NewIterator(iter(a), iter(b))) {
		if p.v != 1 {
			t.Fatalf("sample %v from the second replica, want the first on ties", p)
		}
	}
}

func TestCounterIterator(t *testing.T) {
	// A counts 100, 110, 120 and stops; B, restarted, counts from 1. The merged stream
	// switches to B at 65s.
	a := []pt{{0, 100}, {15_000, 110}, {30_000, 120}}
	b := []pt{{5_000, 1}, {20_000, 2}, {35_000, 3}, {50_000, 4}, {65_000, 5}, {80_000, 6}}
	for _, tc := range []struct {
		name string
		it   func(...chunkenc.Iterator) chunkenc.Iterator
		want []pt
	}{
		{"plain: a false reset", NewIterator, []pt{{0, 100}, {15_000, 110}, {30_000, 120}, {65_000, 5}, {80_000, 6}}},
		{"counter: offset added", NewCounterIterator, []pt{{0, 100}, {15_000, 110}, {30_000, 120}, {65_000, 120}, {80_000, 121}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := collect(t, tc.it(iter(a), iter(b)))
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCounterIteratorSwitchBackAndForth(t *testing.T) {
	// A has a gap in the middle; B's counter is behind A's. Switching A→B at 65s, where B
	// has 92 and A had 120, adds 28 to B; switching back to A needs nothing since A is ahead.
	a := append([]pt{{0, 100}, {15_000, 110}, {30_000, 120}}, []pt{{300_000, 400}, {315_000, 410}}...)
	b := []pt{{5_000, 52}, {20_000, 62}, {35_000, 72}, {50_000, 82}, {65_000, 92}, {80_000, 102}}
	got := collect(t, NewCounterIterator(iter(a), iter(b)))
	want := []pt{{0, 100}, {15_000, 110}, {30_000, 120}, {65_000, 120}, {80_000, 130}, {300_000, 400}, {315_000, 410}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Values never decrease across switches.
	for i := 1; i < len(got); i++ {
		if got[i].v < got[i-1].v {
			t.Errorf("counter decreased at %v", got[i])
		}
	}
}

func TestCounterIteratorThreeReplicas(t *testing.T) {
	// merge(merge(A, B), C): A stops at 30s and resumes at 300s with a lower value than C
	// reached in between; switching back from C to the inner pair adjusts A.
	a := []pt{{0, 10}, {15_000, 11}, {30_000, 12}, {300_000, 20}, {315_000, 21}}
	b := []pt{{1_000, 10}}
	c := every(5, 200, 15, func(t int64) float64 { return 100 + float64((t-5)/15) })
	got := collect(t, NewCounterIterator(iter(a), iter(b), iter(c)))
	want := []pt{{0, 10}, {15_000, 11}, {30_000, 12}}
	for k := int64(4); k <= 13; k++ {
		want = append(want, pt{(5 + 15*k) * 1000, 100 + float64(k)})
	}
	want = append(want, pt{300_000, 113}, pt{315_000, 114})
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestIteratorSeek(t *testing.T) {
	secs := func(t int64) float64 { return float64(t) }
	it := NewIterator(iter(every(0, 60, 15, secs)), iter(append(every(5, 5, 15, secs), every(95, 155, 15, secs)...)))
	if v := it.Seek(40_000); v != chunkenc.ValFloat || it.AtT() != 45_000 {
		t.Fatalf("Seek(40s) = %v at %d, want float at 45s", v, it.AtT())
	}
	if v := it.Seek(10_000); v != chunkenc.ValFloat || it.AtT() != 45_000 {
		t.Fatalf("Seek back to 10s moved to %d, want to stay at 45s", it.AtT())
	}
	// Seeking past A's end continues in B, without skipping B's samples after 60s+penalty.
	if v := it.Seek(100_000); v != chunkenc.ValFloat || it.AtT() != 110_000 {
		t.Fatalf("Seek(100s) = %v at %d, want float at 110s", v, it.AtT())
	}
	if v := it.Seek(1_000_000); v != chunkenc.ValNone {
		t.Fatalf("Seek past the end = %v, want ValNone", v)
	}
	if v := it.Next(); v != chunkenc.ValNone {
		t.Fatalf("Next after the end = %v, want ValNone", v)
	}
}

func TestIteratorHistograms(t *testing.T) {
	h := func(t int64, count uint64) chunks.Sample {
		return hsample{t: t, h: &histogram.Histogram{Count: count, Sum: float64(count), Schema: 0}}
	}
	a := storage.NewListSeriesIterator(hsamples{h(0, 1), h(15_000, 2)})
	b := storage.NewListSeriesIterator(hsamples{h(5_000, 10), h(20_000, 20), h(50_000, 50)})
	it := NewCounterIterator(a, b)
	var got []uint64
	for it.Next() == chunkenc.ValHistogram {
		_, hh := it.AtHistogram(nil)
		if _, fh := it.AtFloatHistogram(nil); fh.Count != float64(hh.Count) {
			t.Errorf("float histogram count %v, histogram count %v", fh.Count, hh.Count)
		}
		got = append(got, hh.Count)
	}
	if want := []uint64{1, 2, 50}; !slices.Equal(got, want) {
		t.Errorf("histogram counts %v, want %v", got, want)
	}
}

type hsample struct {
	t int64
	h *histogram.Histogram
}

func (s hsample) T() int64                      { return s.t }
func (s hsample) ST() int64                     { return 0 }
func (s hsample) F() float64                    { return 0 }
func (s hsample) H() *histogram.Histogram       { return s.h }
func (s hsample) FH() *histogram.FloatHistogram { return s.h.ToFloat(nil) }
func (s hsample) Type() chunkenc.ValueType      { return chunkenc.ValHistogram }
func (s hsample) Copy() chunks.Sample           { return hsample{t: s.t, h: s.h.Copy()} }

type hsamples []chunks.Sample

func (s hsamples) Get(i int) chunks.Sample { return s[i] }
func (s hsamples) Len() int                { return len(s) }

func TestSplitOverlapping(t *testing.T) {
	m := func(mint, maxt int64) chunks.Meta { return chunks.Meta{MinTime: mint, MaxTime: maxt} }
	for _, tc := range []struct {
		name string
		in   []chunks.Meta
		want [][]chunks.Meta
	}{
		{"none", nil, nil},
		{"disjoint stay in one run", []chunks.Meta{m(0, 10), m(11, 20), m(21, 30)}, [][]chunks.Meta{{m(0, 10), m(11, 20), m(21, 30)}}},
		{"touching ends overlap", []chunks.Meta{m(0, 10), m(10, 20)}, [][]chunks.Meta{{m(0, 10)}, {m(10, 20)}}},
		{
			"two interleaved replicas",
			[]chunks.Meta{m(0, 10), m(5, 15), m(11, 20), m(16, 30)},
			[][]chunks.Meta{{m(0, 10), m(11, 20)}, {m(5, 15), m(16, 30)}},
		},
		{
			"a long chunk overlapping several",
			[]chunks.Meta{m(0, 100), m(10, 20), m(30, 40), m(101, 110)},
			[][]chunks.Meta{{m(0, 100), m(101, 110)}, {m(10, 20), m(30, 40)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := SplitOverlapping(tc.in)
			if !slices.EqualFunc(got, tc.want, func(a, b []chunks.Meta) bool {
				return slices.EqualFunc(a, b, func(x, y chunks.Meta) bool { return x.MinTime == y.MinTime && x.MaxTime == y.MaxTime })
			}) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIsCounterFunc(t *testing.T) {
	for fn, want := range map[string]bool{"rate": true, "increase": true, "irate": true, "resets": true, "sum": false, "": false, "delta": false} {
		if got := IsCounterFunc(fn); got != want {
			t.Errorf("IsCounterFunc(%q) = %v, want %v", fn, got, want)
		}
	}
}
