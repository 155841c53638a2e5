package storeapi

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

const (
	res5m = int64(300_000)
	res1h = int64(3_600_000)
)

// aggrSource is a store holding one counter over [0, 2h) (every 15s, reset at 1h) as raw
// chunks and as downsampled 5m chunks, and a gauge whose downsampled chunks lack min and
// max (as native-histogram chunks do). ChunkQuerierFor serves the downsampled chunks when
// the resolution allows 5m data.
type aggrSource struct {
	raw, downsampled []storage.ChunkSeries
}

var (
	counterLabels = labels.FromStrings("__name__", "c_total", "cluster", "x")
	gaugeLabels   = labels.FromStrings("__name__", "g", "cluster", "x")
)

func newAggrSource(t *testing.T) *aggrSource {
	t.Helper()
	var counter, gauge []sample
	for ts := int64(0); ts < 2*3_600_000; ts += 15_000 {
		v := float64(ts / 1000)
		if ts >= 3_600_000 {
			v -= 3000 // a reset: 3600 → 600
		}
		counter = append(counter, sample{ts, v})
		gauge = append(gauge, sample{ts, math.Sin(float64(ts) / 1e6)})
	}
	return &aggrSource{
		raw: []storage.ChunkSeries{
			rawSeries(t, counterLabels, counter),
			rawSeries(t, gaugeLabels, gauge),
		},
		downsampled: []storage.ChunkSeries{
			aggrSeries(t, counterLabels, counter, true),
			aggrSeries(t, gaugeLabels, gauge, false),
		},
	}
}

type sample struct {
	t int64
	v float64
}

// xorChunk encodes samples in one XOR chunk.
func xorChunk(t *testing.T, samples []sample) chunkenc.Chunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		app.Append(0, s.t, s.v)
	}
	return c
}

// rawSeries is samples in chunks of 120.
func rawSeries(t *testing.T, lset labels.Labels, samples []sample) storage.ChunkSeries {
	t.Helper()
	var metas []chunks.Meta
	for part := range slices.Chunk(samples, 120) {
		metas = append(metas, chunks.Meta{Chunk: xorChunk(t, part), MinTime: part[0].t, MaxTime: part[len(part)-1].t})
	}
	return &storage.ChunkSeriesEntry{Lset: lset, ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
		return storage.NewListChunkSeriesIterator(metas...)
	}}
}

// aggrSeries aggregates samples into 5m windows, two downsampled chunks of an hour each,
// as the downsampler does; withMinMax false leaves min and max out.
func aggrSeries(t *testing.T, lset labels.Labels, samples []sample, withMinMax bool) storage.ChunkSeries {
	t.Helper()
	var metas []chunks.Meta
	for part := range slices.Chunk(samples, 240) {
		var count, sum, mn, mx, counter []sample
		counter = append(counter, part[0])
		total, prev := part[0].v, part[0].v
		for i := 0; i < len(part); {
			end := part[i].t - part[i].t%res5m + res5m - 1
			var n, s float64
			lo, hi := math.Inf(1), math.Inf(-1)
			for ; i < len(part) && part[i].t <= end; i++ {
				v := part[i].v
				n, s, lo, hi = n+1, s+v, min(lo, v), max(hi, v)
				if v >= prev {
					total += v - prev
				} else {
					total += v
				}
				prev = v
			}
			at := min(end, part[i-1].t)
			count, sum = append(count, sample{at, n}), append(sum, sample{at, s})
			mn, mx, counter = append(mn, sample{at, lo}), append(mx, sample{at, hi}), append(counter, sample{at, total})
		}
		counter = append(counter, sample{counter[len(counter)-1].t, part[len(part)-1].v})
		subs := [aggrchunk.NumAggrs]chunkenc.Chunk{
			aggrchunk.Count:   xorChunk(t, count),
			aggrchunk.Sum:     xorChunk(t, sum),
			aggrchunk.Counter: xorChunk(t, counter),
		}
		if withMinMax {
			subs[aggrchunk.Min], subs[aggrchunk.Max] = xorChunk(t, mn), xorChunk(t, mx)
		}
		metas = append(metas, chunks.Meta{Chunk: aggrchunk.Encode(subs), MinTime: part[0].t, MaxTime: count[len(count)-1].t})
	}
	return &storage.ChunkSeriesEntry{Lset: lset, ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
		return storage.NewListChunkSeriesIterator(metas...)
	}}
}

func (s *aggrSource) Info(context.Context) (Info, error) {
	return Info{LabelSets: []labels.Labels{labels.FromStrings("cluster", "x")}, MinTime: 0, MaxTime: 2*res1h - 1}, nil
}

func (s *aggrSource) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return listQuerier(s.raw), nil
}

func (s *aggrSource) ChunkQuerierFor(_, _, maxResolution int64) (storage.ChunkQuerier, error) {
	if maxResolution < res5m {
		return listQuerier(s.raw), nil
	}
	return listQuerier(s.downsampled), nil
}

// listQuerier selects from fixed series, sorted by labels.
type listQuerier []storage.ChunkSeries

func (l listQuerier) Select(_ context.Context, _ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	var out []storage.ChunkSeries
next:
	for _, s := range l {
		for _, m := range ms {
			if !m.Matches(s.Labels().Get(m.Name)) {
				continue next
			}
		}
		out = append(out, s)
	}
	return &chunkSeriesList{series: out, i: -1}
}

func (listQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (listQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}

func (listQuerier) Close() error { return nil }

// metasOf returns the chunks of the series of src named lset.
func metasOf(src []storage.ChunkSeries, lset labels.Labels) []chunks.Meta {
	for _, s := range src {
		if labels.Equal(s.Labels(), lset) {
			var out []chunks.Meta
			it := s.Iterator(nil)
			for it.Next() {
				out = append(out, it.At())
			}
			return out
		}
	}
	return nil
}

// TestSeriesDownsampledAggregates: for downsampled chunks, Series fills exactly the
// aggregates asked for (COUNT and SUM when none is named), with the sub-chunks' encodings
// and data, and no raw chunk; an aggregate the chunk lacks is an error; raw data is served
// as ever when max_resolution_window is 0.
func TestSeriesDownsampledAggregates(t *testing.T) {
	src := newAggrSource(t)
	addr, _ := startServer(t, src)
	c := dial(t, addr)
	aggr := metasOf(src.downsampled, counterLabels)

	for _, tc := range []struct {
		name       string
		window     int64
		aggregates []storepb.Aggr
		metric     string
		want       []aggrchunk.Aggr // nil: raw chunks
		err        string
	}{
		{"raw", 0, []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}, "c_total", nil, ""},
		{"raw below 5m", 60_000, []storepb.Aggr{storepb.Aggr_COUNTER}, "c_total", nil, ""},
		{"count and sum", res5m, []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}, "c_total", []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum}, ""},
		{"counter", res1h, []storepb.Aggr{storepb.Aggr_COUNTER}, "c_total", []aggrchunk.Aggr{aggrchunk.Counter}, ""},
		{"min and max", res1h, []storepb.Aggr{storepb.Aggr_MIN, storepb.Aggr_MAX}, "c_total", []aggrchunk.Aggr{aggrchunk.Min, aggrchunk.Max}, ""},
		{"none named", res5m, nil, "c_total", []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum}, ""},
		{"raw named", res5m, []storepb.Aggr{storepb.Aggr_RAW}, "c_total", []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum}, ""},
		{"absent min", res5m, []storepb.Aggr{storepb.Aggr_MIN}, "g", nil, "aggregate absent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &storepb.SeriesRequest{
				MinTime: 0, MaxTime: 2*res1h - 1, Matchers: []*storepb.LabelMatcher{eq("__name__", tc.metric)},
				MaxResolutionWindow: tc.window, Aggregates: tc.aggregates,
			}
			res, err := callSeries(context.Background(), c, req)
			if tc.err != "" {
				if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an Internal error saying %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.series) != 1 {
				t.Fatalf("%d series, want 1", len(res.series))
			}
			got := res.series[0].GetChunks()
			if tc.want == nil {
				for _, ch := range got {
					if ch.GetRaw() == nil || ch.GetCount() != nil || ch.GetCounter() != nil {
						t.Fatalf("want raw chunks only, got %v", ch)
					}
				}
				return
			}
			if len(got) != len(aggr) {
				t.Fatalf("%d chunks, want %d", len(got), len(aggr))
			}
			for i, ch := range got {
				if ch.GetRaw() != nil {
					t.Fatal("a downsampled chunk came with raw data")
				}
				if ch.GetMinTime() != aggr[i].MinTime || ch.GetMaxTime() != aggr[i].MaxTime {
					t.Errorf("chunk %d: [%d,%d], want [%d,%d]", i, ch.GetMinTime(), ch.GetMaxTime(), aggr[i].MinTime, aggr[i].MaxTime)
				}
				for a := range aggrchunk.Aggr(aggrchunk.NumAggrs) {
					wc := *aggrField(ch, a)
					if !slices.Contains(tc.want, a) {
						if wc != nil {
							t.Errorf("chunk %d: %s aggregate sent, not asked for", i, a)
						}
						continue
					}
					sub, err := aggr[i].Chunk.(*aggrchunk.Chunk).Get(a)
					if err != nil {
						t.Fatal(err)
					}
					if wc == nil || wc.GetType() != storepb.Chunk_XOR || string(wc.GetData()) != string(sub.Bytes()) || wc.GetHash() == 0 {
						t.Errorf("chunk %d: %s aggregate %v, want the XOR sub-chunk with a hash", i, a, wc)
					}
				}
			}
		})
	}
}

// TestQueryableDownsampled: the fan-out client asks for the aggregates of the function
// around the selector at the resolution the query allows (half the range for rate()),
// and reads the answer as the same chunks read locally would be.
func TestQueryableDownsampled(t *testing.T) {
	src := newAggrSource(t)
	addr, _ := startServer(t, src)
	q := newTestQueryable(t, []string{addr}, QueryableOptions{})
	name := labels.MustNewMatcher(labels.MatchEqual, "__name__", "c_total")

	local := func(metas []chunks.Meta, aggrs []aggrchunk.Aggr) []float64 {
		chks := make([]chunkenc.Chunk, len(metas))
		for i, m := range metas {
			chks[i] = m.Chunk
		}
		var out []float64
		it := aggrchunk.SeriesIterator(chks, aggrs)
		for it.Next() == chunkenc.ValFloat {
			_, v := it.At()
			out = append(out, v)
		}
		return out
	}
	raw := local(metasOf(src.raw, counterLabels), nil)
	aggr := metasOf(src.downsampled, counterLabels)

	for _, tc := range []struct {
		name   string
		maxRes int64
		fn     string
		rng    int64
		want   []float64
	}{
		{"raw only", 0, "max_over_time", res1h, raw},
		{"max", res1h, "max_over_time", res1h, local(aggr, []aggrchunk.Aggr{aggrchunk.Max})},
		{"average", res5m, "", 0, local(aggr, []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum})},
		{"counter", res1h, "rate", 2 * res1h, local(aggr, []aggrchunk.Aggr{aggrchunk.Counter})},
		{"rate over 5m reads raw", res1h, "rate", res5m, raw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := q.With(QueryOptions{MaxResolutionWindow: tc.maxRes})
			got := selectAll(t, v, &storage.SelectHints{Start: 0, End: 2*res1h - 1, Func: tc.fn, Range: tc.rng}, name)
			if got.err != nil {
				t.Fatal(got.err)
			}
			vals := got.values[counterLabels.String()]
			if len(vals) == 0 || !slices.Equal(vals, tc.want) {
				t.Fatalf("got %d values %v…, want %d %v…", len(vals), vals[:min(5, len(vals))], len(tc.want), tc.want[:min(5, len(tc.want))])
			}
		})
	}
}

func TestSelectResolution(t *testing.T) {
	for _, tc := range []struct {
		maxRes int64
		hints  *storage.SelectHints
		want   int64
	}{
		{0, &storage.SelectHints{Func: "max_over_time"}, 0},
		{res1h, nil, res1h},
		{res1h, &storage.SelectHints{Func: "max_over_time", Range: res5m}, res1h},
		{res1h, &storage.SelectHints{}, res1h},
		{res1h, &storage.SelectHints{Func: "rate", Range: res5m}, res5m / 2},
		{res1h, &storage.SelectHints{Func: "rate", Range: res1h}, res1h / 2},
		{res1h, &storage.SelectHints{Func: "increase", Range: 4 * res1h}, res1h},
		{res5m, &storage.SelectHints{Func: "deriv", Range: 4 * res1h}, res5m},
		{res1h, &storage.SelectHints{Func: "irate"}, 0}, // over a subquery: no range
		{res1h, &storage.SelectHints{Func: "double_exponential_smoothing", Range: 2 * res1h}, res1h},
	} {
		if got := SelectResolution(tc.maxRes, tc.hints); got != tc.want {
			t.Errorf("SelectResolution(%d, %+v) = %d, want %d", tc.maxRes, tc.hints, got, tc.want)
		}
	}
}
