package storeapi

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/internal/storeapi/snappy"
	"github.com/blockflow/blockflow/schemas/thanos/info/infopb"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

const step = 15_000 // ms between samples

// jobsFixture serves up{job, instance} for jobs a, b, ab, c with the external label
// cluster="eu": 240 samples each, two chunks.
func jobsFixture(t *testing.T) (*tsdbSource, *Client) {
	t.Helper()
	db := openDB(t, t.TempDir())
	for _, s := range []struct{ job, instance string }{{"a", "1"}, {"b", "1"}, {"ab", "2"}, {"c", "3"}} {
		appendFloats(t, db, labels.FromStrings("__name__", "up", "job", s.job, "instance", s.instance), 0, step, 240, constant(1))
	}
	src := newTSDBSource(db, labels.FromStrings("cluster", "eu"))
	addr, _ := startServer(t, src)
	return src, dial(t, addr)
}

func jobsOf(ss []*storepb.Series) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		out = append(out, LabelsFromProto(s.GetLabels()).Get("job"))
	}
	return out
}

func TestSeriesMatchers(t *testing.T) {
	_, c := jobsFixture(t)
	m := func(typ storepb.LabelMatcher_Type, name, value string) *storepb.LabelMatcher {
		return &storepb.LabelMatcher{Type: typ, Name: name, Value: value}
	}
	const (
		EQ  = storepb.LabelMatcher_EQ
		NEQ = storepb.LabelMatcher_NEQ
		RE  = storepb.LabelMatcher_RE
		NRE = storepb.LabelMatcher_NRE
	)
	for _, tc := range []struct {
		name     string
		matchers []*storepb.LabelMatcher
		want     []string // jobs, in stream order
	}{
		{"equal", []*storepb.LabelMatcher{m(EQ, "job", "a")}, []string{"a"}},
		{"not equal", []*storepb.LabelMatcher{m(NEQ, "job", "a")}, []string{"b", "ab", "c"}},
		{"regexp is anchored", []*storepb.LabelMatcher{m(RE, "job", "a|b")}, []string{"a", "b"}},
		{"not regexp", []*storepb.LabelMatcher{m(NRE, "job", "a.*")}, []string{"b", "c"}},
		{"metric name", []*storepb.LabelMatcher{m(EQ, "__name__", "up")}, []string{"a", "b", "ab", "c"}},
		{"external equal", []*storepb.LabelMatcher{m(EQ, "cluster", "eu"), m(EQ, "job", "c")}, []string{"c"}},
		{"external equal, other value", []*storepb.LabelMatcher{m(EQ, "cluster", "us")}, nil},
		{"external only, all series", []*storepb.LabelMatcher{m(RE, "cluster", "e.")}, []string{"a", "b", "ab", "c"}},
		{"external not equal", []*storepb.LabelMatcher{m(NEQ, "cluster", "eu")}, nil},
		{"external not regexp", []*storepb.LabelMatcher{m(NRE, "cluster", "us"), m(EQ, "job", "b")}, []string{"b"}},
		{"external not regexp, excluded", []*storepb.LabelMatcher{m(NRE, "cluster", "e.*"), m(EQ, "job", "b")}, nil},
		{"absent label equal empty", []*storepb.LabelMatcher{m(EQ, "zone", ""), m(EQ, "job", "a")}, []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mustSeries(t, c, &storepb.SeriesRequest{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Matchers: tc.matchers})
			if got := jobsOf(res.series); !slices.Equal(got, tc.want) {
				t.Errorf("jobs %v, want %v", got, tc.want)
			}
			for _, s := range res.series {
				if got := LabelsFromProto(s.GetLabels()).Get("cluster"); got != "eu" {
					t.Errorf("series %s without the external label", LabelsFromProto(s.GetLabels()))
				}
			}
		})
	}
}

func TestSeriesBadRequests(t *testing.T) {
	_, c := jobsFixture(t)
	for _, tc := range []struct {
		name string
		req  *storepb.SeriesRequest
	}{
		{"bad regexp", &storepb.SeriesRequest{MaxTime: 1, Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "job", Value: "("}}}},
		{"unknown matcher type", &storepb.SeriesRequest{MaxTime: 1, Matchers: []*storepb.LabelMatcher{{Type: 7, Name: "job", Value: "a"}}}},
		{"no matchers", &storepb.SeriesRequest{MaxTime: 1}},
		{"min after max", &storepb.SeriesRequest{MinTime: 2, MaxTime: 1, Matchers: []*storepb.LabelMatcher{eq("job", "a")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := callSeries(context.Background(), c, tc.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err %v, want InvalidArgument", err)
			}
		})
	}
}

func TestSeriesSortedWithExternalLabels(t *testing.T) {
	// {x="1"} < {x="1",y="1"}, but with z="1" attached {x,y,z} < {x,z}.
	db := openDB(t, t.TempDir())
	appendFloats(t, db, labels.FromStrings("x", "1"), 0, step, 10, constant(1))
	appendFloats(t, db, labels.FromStrings("x", "1", "y", "1"), 0, step, 10, constant(2))
	addr, _ := startServer(t, newTSDBSource(db, labels.FromStrings("z", "1")))
	c := dial(t, addr)

	res := mustSeries(t, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("x", "1")}})
	want := []string{`{x="1", y="1", z="1"}`, `{x="1", z="1"}`}
	if got := seriesLabels(res.series); !slices.Equal(got, want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for _, s := range res.series {
		names := make([]string, len(s.GetLabels()))
		for i, l := range s.GetLabels() {
			names[i] = l.GetName()
		}
		if !slices.IsSorted(names) {
			t.Errorf("labels of a series not sorted by name on the wire: %v", names)
		}
	}
}

func TestSeriesTimeRange(t *testing.T) {
	_, c := jobsFixture(t)
	full := mustSeries(t, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("job", "a")}})
	if len(full.series) != 1 || len(full.series[0].GetChunks()) < 2 {
		t.Fatalf("fixture: want one series with several chunks, got %v", full.series)
	}
	all := full.series[0].GetChunks()
	last := all[len(all)-1]
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		wantChunks int
	}{
		{"everything", 0, 239 * step, len(all)},
		{"first sample only", 0, 0, 1},
		{"last chunk only", last.GetMinTime(), last.GetMinTime(), 1},
		{"after the data", 240 * step, 300 * step, 0},
		{"before the data", -100 * step, -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mustSeries(t, c, &storepb.SeriesRequest{MinTime: tc.mint, MaxTime: tc.maxt, Matchers: []*storepb.LabelMatcher{eq("job", "a")}})
			var got int
			for _, s := range res.series {
				for _, ch := range s.GetChunks() {
					got++
					if ch.GetMaxTime() < tc.mint || ch.GetMinTime() > tc.maxt {
						t.Errorf("chunk [%d,%d] outside [%d,%d]", ch.GetMinTime(), ch.GetMaxTime(), tc.mint, tc.maxt)
					}
				}
			}
			if got != tc.wantChunks {
				t.Errorf("%d chunks, want %d", got, tc.wantChunks)
			}
		})
	}
}

func TestSeriesLimitAndSkipChunks(t *testing.T) {
	_, c := jobsFixture(t)
	upReq := func(mod func(*storepb.SeriesRequest)) *storepb.SeriesRequest {
		r := &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "up")}}
		mod(r)
		return r
	}
	res := mustSeries(t, c, upReq(func(r *storepb.SeriesRequest) { r.Limit = 2 }))
	if got, want := jobsOf(res.series), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("limit 2: jobs %v, want %v", got, want)
	}
	res = mustSeries(t, c, upReq(func(r *storepb.SeriesRequest) { r.SkipChunks = true }))
	if len(res.series) != 4 {
		t.Fatalf("skip_chunks: %d series, want 4", len(res.series))
	}
	for _, s := range res.series {
		if len(s.GetChunks()) != 0 {
			t.Errorf("skip_chunks: series %s has %d chunks", LabelsFromProto(s.GetLabels()), len(s.GetChunks()))
		}
	}
}

func TestSeriesBatching(t *testing.T) {
	_, c := jobsFixture(t)
	for _, tc := range []struct {
		batch      int64
		wantFrames []int
	}{
		{0, []int{0, 0, 0, 0}},
		{1, []int{0, 0, 0, 0}},
		{3, []int{3, 1}},
		{4, []int{4}},
		{64, []int{4}},
	} {
		res := mustSeries(t, c, &storepb.SeriesRequest{
			MinTime: 0, MaxTime: math.MaxInt64, ResponseBatchSize: tc.batch,
			Matchers: []*storepb.LabelMatcher{eq("__name__", "up")},
		})
		if !slices.Equal(res.frames, tc.wantFrames) {
			t.Errorf("batch size %d: frames %v, want %v", tc.batch, res.frames, tc.wantFrames)
		}
		if got, want := jobsOf(res.series), []string{"a", "b", "ab", "c"}; !slices.Equal(got, want) {
			t.Errorf("batch size %d: jobs %v, want %v", tc.batch, got, want)
		}
	}
}

func TestSeriesWithoutReplicaLabels(t *testing.T) {
	db := openDB(t, t.TempDir())
	// Sorted with replica: s1 < s2; without it, {a="1",z="1"} < {a="1",z="2"}.
	appendFloats(t, db, labels.FromStrings("a", "1", "replica", "0", "z", "2"), 0, step, 10, constant(1))
	appendFloats(t, db, labels.FromStrings("a", "1", "replica", "1", "z", "1"), 0, step, 10, constant(1))
	// Identical replicas: one chunk after merging.
	appendFloats(t, db, labels.FromStrings("a", "2", "replica", "0"), 0, step, 10, constant(1))
	appendFloats(t, db, labels.FromStrings("a", "2", "replica", "1"), 0, step, 10, constant(1))
	// Replicas scraped 5s apart: two chunks, sorted by time.
	appendFloats(t, db, labels.FromStrings("a", "3", "replica", "1"), 5_000, step, 10, constant(1))
	appendFloats(t, db, labels.FromStrings("a", "3", "replica", "0"), 0, step, 10, constant(1))
	addr, _ := startServer(t, newTSDBSource(db, labels.FromStrings("site", "x")))
	c := dial(t, addr)

	res := mustSeries(t, c, &storepb.SeriesRequest{
		MinTime: 0, MaxTime: math.MaxInt64, WithoutReplicaLabels: []string{"replica"}, ResponseBatchSize: 2,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "a", Value: ".+"}},
	})
	want := []string{`{a="1", site="x", z="1"}`, `{a="1", site="x", z="2"}`, `{a="2", site="x"}`, `{a="3", site="x"}`}
	if got := seriesLabels(res.series); !slices.Equal(got, want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	if n := len(res.series[2].GetChunks()); n != 1 {
		t.Errorf("identical replicas merged into %d chunks, want 1", n)
	}
	chks := res.series[3].GetChunks()
	if len(chks) != 2 || chks[0].GetMinTime() != 0 || chks[1].GetMinTime() != 5_000 {
		t.Errorf("offset replicas: chunks %v, want two sorted by min time", chks)
	}

	// An external label can be stripped too (the usual case: replica is external).
	res = mustSeries(t, c, &storepb.SeriesRequest{
		MinTime: 0, MaxTime: math.MaxInt64, WithoutReplicaLabels: []string{"site", "replica"},
		Matchers: []*storepb.LabelMatcher{eq("a", "2")},
	})
	if got, want := seriesLabels(res.series), []string{`{a="2"}`}; !slices.Equal(got, want) {
		t.Errorf("series %v, want %v", got, want)
	}
}

func TestSeriesChunkEncodings(t *testing.T) {
	db := openDB(t, t.TempDir())
	app := db.Appender(context.Background())
	for i := range int64(10) {
		ts := i * step
		if _, err := app.Append(0, labels.FromStrings("__name__", "float"), ts, float64(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := app.AppendHistogram(0, labels.FromStrings("__name__", "hist"), ts, tsdbutil.GenerateTestHistogram(i), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := app.AppendHistogram(0, labels.FromStrings("__name__", "fhist"), ts, nil, tsdbutil.GenerateTestFloatHistogram(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, newTSDBSource(db, labels.FromStrings("site", "x")))
	c := dial(t, addr)

	res := mustSeries(t, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}}})
	wantType := map[string]storepb.Chunk_Encoding{"float": storepb.Chunk_XOR, "hist": storepb.Chunk_HISTOGRAM, "fhist": storepb.Chunk_FLOAT_HISTOGRAM}
	wantVal := map[string]chunkenc.ValueType{"float": chunkenc.ValFloat, "hist": chunkenc.ValHistogram, "fhist": chunkenc.ValFloatHistogram}
	if len(res.series) != 3 {
		t.Fatalf("%d series, want 3", len(res.series))
	}
	for _, s := range res.series {
		name := LabelsFromProto(s.GetLabels()).Get("__name__")
		for _, ch := range s.GetChunks() {
			raw := ch.GetRaw()
			if raw.GetType() != wantType[name] {
				t.Errorf("%s: chunk type %v, want %v", name, raw.GetType(), wantType[name])
			}
			if raw.GetHash() != xxhash.Sum64(raw.GetData()) {
				t.Errorf("%s: chunk hash %x, want xxhash64 of data", name, raw.GetHash())
			}
			m, err := ChunkFromProto(ch)
			if err != nil {
				t.Fatal(err)
			}
			it := m.Chunk.Iterator(nil)
			n := 0
			for v := it.Next(); v != chunkenc.ValNone; v = it.Next() {
				if v != wantVal[name] {
					t.Fatalf("%s: sample of type %v", name, v)
				}
				if ts := it.AtT(); ts < ch.GetMinTime() || ts > ch.GetMaxTime() {
					t.Errorf("%s: sample at %d outside chunk [%d,%d]", name, ts, ch.GetMinTime(), ch.GetMaxTime())
				}
				n++
			}
			if n != 10 {
				t.Errorf("%s: %d samples, want 10", name, n)
			}
		}
	}
}

// warningSource adds a warning to every Select, as a source with a missing block would.
type warningSource struct{ Source }

func (w warningSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := w.Source.ChunkQuerier(mint, maxt)
	return warningQuerier{q}, err
}

type warningQuerier struct{ storage.ChunkQuerier }

func (w warningQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	var list []storage.ChunkSeries
	set := w.ChunkQuerier.Select(ctx, sortSeries, hints, ms...)
	for set.Next() {
		list = append(list, set.At())
	}
	var warns annotations.Annotations
	warns.Add(errAnnotation("block 01ABC unreadable"))
	return &chunkSeriesList{series: list, i: -1, warnings: warns}
}

type errAnnotation string

func (e errAnnotation) Error() string { return string(e) }

func TestSeriesWarnings(t *testing.T) {
	src, _ := jobsFixture(t)
	addr, _ := startServer(t, warningSource{src})
	res := mustSeries(t, dial(t, addr), &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("job", "a")}})
	if len(res.series) != 1 || !slices.Equal(res.warnings, []string{"block 01ABC unreadable"}) {
		t.Fatalf("series %d, warnings %q; want 1 and the source's warning", len(res.series), res.warnings)
	}
}

func TestLabelNamesAndValues(t *testing.T) {
	_, c := jobsFixture(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *storepb.LabelNamesRequest
		want []string
	}{
		{"all", &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64}, []string{"__name__", "cluster", "instance", "job"}},
		{"matcher", &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("job", "a")}}, []string{"__name__", "cluster", "instance", "job"}},
		{"external matcher mismatch", &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("cluster", "us")}}, nil},
		{"without replica labels", &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64, WithoutReplicaLabels: []string{"cluster"}}, []string{"__name__", "instance", "job"}},
		{"limit", &storepb.LabelNamesRequest{Start: 0, End: math.MaxInt64, Limit: 2}, []string{"__name__", "cluster"}},
		{"no data in range", &storepb.LabelNamesRequest{Start: 1e12, End: 2e12}, nil},
	} {
		t.Run("names "+tc.name, func(t *testing.T) {
			resp, err := c.Store().LabelNames(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(resp.GetNames(), tc.want) {
				t.Errorf("names %v, want %v", resp.GetNames(), tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		req  *storepb.LabelValuesRequest
		want []string
	}{
		{"all", &storepb.LabelValuesRequest{Label: "job", Start: 0, End: math.MaxInt64}, []string{"a", "ab", "b", "c"}},
		{"matcher", &storepb.LabelValuesRequest{Label: "job", Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("instance", "1")}}, []string{"a", "b"}},
		{"limit", &storepb.LabelValuesRequest{Label: "job", Start: 0, End: math.MaxInt64, Limit: 2}, []string{"a", "ab"}},
		{"external label", &storepb.LabelValuesRequest{Label: "cluster", Start: 0, End: math.MaxInt64}, []string{"eu"}},
		{"external label, matcher", &storepb.LabelValuesRequest{Label: "cluster", Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("job", "c")}}, []string{"eu"}},
		{"external label, no series", &storepb.LabelValuesRequest{Label: "cluster", Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("job", "zzz")}}, nil},
		{"external matcher mismatch", &storepb.LabelValuesRequest{Label: "job", Start: 0, End: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("cluster", "us")}}, nil},
		{"without replica labels", &storepb.LabelValuesRequest{Label: "cluster", Start: 0, End: math.MaxInt64, WithoutReplicaLabels: []string{"cluster"}}, nil},
	} {
		t.Run("values "+tc.name, func(t *testing.T) {
			resp, err := c.Store().LabelValues(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(resp.GetValues(), tc.want) {
				t.Errorf("values %v, want %v", resp.GetValues(), tc.want)
			}
		})
	}
	if _, err := c.Store().LabelValues(ctx, &storepb.LabelValuesRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("label values without a name: %v, want InvalidArgument", err)
	}
	if _, err := c.Store().LabelNames(ctx, &storepb.LabelNamesRequest{Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "a", Value: "("}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("label names with a bad matcher: %v, want InvalidArgument", err)
	}
}

func TestInfo(t *testing.T) {
	src, c := jobsFixture(t)
	ctx := context.Background()
	src.ready.Store(false)
	if _, err := infopb.NewInfoClient(c.conn).Info(ctx, &infopb.InfoRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("info before ready: %v, want Unavailable", err)
	}
	if _, err := c.Store().Info(ctx, &storepb.InfoRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("legacy info before ready: %v, want Unavailable", err)
	}
	if _, err := c.Info(ctx); err == nil {
		t.Fatal("client info before ready: no error")
	}

	src.ready.Store(true)
	resp, err := infopb.NewInfoClient(c.conn).Info(ctx, &infopb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetComponentType() != "sidecar" {
		t.Errorf("ComponentType %q, want sidecar", resp.GetComponentType())
	}
	st := resp.GetStore()
	if st == nil || st.GetMinTime() != 0 || st.GetMaxTime() != 239*step || !st.GetSupportsWithoutReplicaLabels() || st.GetSupportsSharding() {
		t.Errorf("store info %v, want [0, %d], without replica labels, no sharding", st, 239*step)
	}
	if len(resp.GetLabelSets()) != 1 || LabelsFromProto(resp.GetLabelSets()[0].GetLabels()).String() != `{cluster="eu"}` {
		t.Errorf("label sets %v, want [{cluster=\"eu\"}]", resp.GetLabelSets())
	}
	if ti := st.GetTsdbInfos(); len(ti) != 1 || ti[0].GetMaxTime() != 239*step || LabelsFromProto(ti[0].GetLabels().GetLabels()).Get("cluster") != "eu" {
		t.Errorf("tsdb infos %v", ti)
	}
	if resp.GetRules() != nil || resp.GetQuery() != nil || resp.GetExemplars() != nil {
		t.Errorf("info advertises APIs it does not serve: %v", resp)
	}

	legacy, err := c.Store().Info(ctx, &storepb.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if legacy.GetStoreType() != storepb.StoreType_SIDECAR || legacy.GetMaxTime() != 239*step || len(legacy.GetLabelSets()) != 1 || len(legacy.GetLabels()) != 1 {
		t.Errorf("legacy info %v", legacy)
	}

	ri, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ri.ComponentType != "sidecar" || !ri.WithoutReplicaLabels || ri.MaxTime != 239*step || len(ri.LabelSets) != 1 || len(ri.TSDBInfos) != 1 {
		t.Errorf("client info %+v", ri)
	}
}

func TestInfoDefaultsToStore(t *testing.T) {
	src, _ := jobsFixture(t)
	src.component = ""
	addr, _ := startServer(t, src)
	ri, err := dial(t, addr).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ri.ComponentType != "store" {
		t.Errorf("component type %q, want store", ri.ComponentType)
	}
}

func TestLegacyInfoFallback(t *testing.T) {
	// An endpoint older than thanos.info.Info: only thanos.Store is registered.
	src, _ := jobsFixture(t)
	lis := NewGRPCServer()
	storepb.RegisterStoreServer(lis, storeService{s: NewServer(src)})
	addr := serve(t, lis)
	ri, err := dial(t, addr).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ri.ComponentType != "sidecar" || ri.MaxTime != 239*step || len(ri.LabelSets) != 1 || ri.WithoutReplicaLabels {
		t.Errorf("legacy info %+v", ri)
	}
}

// compressionRecorder records the compression of incoming requests.
type compressionRecorder struct{ got chan string }

func (r compressionRecorder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (r compressionRecorder) HandleRPC(_ context.Context, s stats.RPCStats) {
	if h, ok := s.(*stats.InHeader); ok {
		r.got <- h.Compression
	}
}

func (r compressionRecorder) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (r compressionRecorder) HandleConn(context.Context, stats.ConnStats) {}

func TestSnappyCompression(t *testing.T) {
	src, _ := jobsFixture(t)
	rec := compressionRecorder{got: make(chan string, 16)}
	addr, _ := startServer(t, src, grpc.StatsHandler(rec))
	c := dial(t, addr, grpc.WithDefaultCallOptions(grpc.UseCompressor(snappy.Name)))
	res := mustSeries(t, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "up")}})
	if got := jobsOf(res.series); !slices.Equal(got, []string{"a", "b", "ab", "c"}) {
		t.Errorf("jobs %v over snappy", got)
	}
	if enc := <-rec.got; enc != snappy.Name {
		t.Errorf("request compression %q, want snappy", enc)
	}
}

func TestServerMetrics(t *testing.T) {
	src, _ := jobsFixture(t)
	reg := prometheus.NewRegistry()
	g := NewGRPCServer()
	NewServer(src, WithRegisterer(reg), WithLogger(zerolog.Nop())).Register(g)
	c := dial(t, serve(t, g))
	mustSeries(t, c, &storepb.SeriesRequest{MinTime: 0, MaxTime: math.MaxInt64, Matchers: []*storepb.LabelMatcher{eq("__name__", "up")}})
	if _, err := callSeries(context.Background(), c, &storepb.SeriesRequest{MaxTime: 1}); err == nil {
		t.Fatal("request without matchers succeeded")
	}
	want := `
# HELP blockflow_storeapi_series_sent_total Series sent in StoreAPI Series responses.
# TYPE blockflow_storeapi_series_sent_total counter
blockflow_storeapi_series_sent_total 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "blockflow_storeapi_series_sent_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "blockflow_storeapi_series_request_duration_seconds"); err != nil || n != 2 {
		t.Errorf("duration histograms: %d (%v), want one per status code (OK, InvalidArgument)", n, err)
	}
}
