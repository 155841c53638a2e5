package queryd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/producers/sidecar"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// serveStoreAPI serves what register registers on a loopback port until the test ends and
// returns a client for it.
func serveStoreAPI(t testing.TB, register func(*grpc.Server)) *storeapi.Client {
	t.Helper()
	g := storeapi.NewGRPCServer()
	register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	c, err := storeapi.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// oracleSeries is a series of the fixture as a StoreAPI must serve it: external labels
// attached, samples rendered exactly.
type oracleSeries struct {
	lset    labels.Labels
	times   []int64
	samples []string
}

// oracle reads the fixture's blocks straight from disk with Prometheus' tsdb.
func oracle(t *testing.T, f *fixture) []oracleSeries {
	t.Helper()
	q, err := f.openDB(t).Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+"))
	var out []oracleSeries
	for set.Next() {
		b := labels.NewBuilder(set.At().Labels())
		for k, v := range ext {
			b.Set(k, v)
		}
		s := oracleSeries{lset: b.Labels()}
		it := set.At().Iterator(nil)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			ts, sample := renderSample(it, vt)
			s.times, s.samples = append(s.times, ts), append(s.samples, sample)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b oracleSeries) int { return labels.Compare(a.lset, b.lset) })
	return out
}

func renderSample(it chunkenc.Iterator, vt chunkenc.ValueType) (int64, string) {
	switch vt {
	case chunkenc.ValHistogram:
		ts, h := it.AtHistogram(nil)
		return ts, fmt.Sprintf("%d h%s", ts, h)
	case chunkenc.ValFloatHistogram:
		ts, h := it.AtFloatHistogram(nil)
		return ts, fmt.Sprintf("%d fh%s", ts, h)
	}
	ts, v := it.At()
	return ts, fmt.Sprintf("%d %016x", ts, math.Float64bits(v))
}

// expect returns the oracle's series matching ms with samples in [mint, maxt], cut to them.
func expect(all []oracleSeries, mint, maxt int64, ms []*labels.Matcher) []oracleSeries {
	var out []oracleSeries
next:
	for _, s := range all {
		for _, m := range ms {
			if !m.Matches(s.lset.Get(m.Name)) {
				continue next
			}
		}
		in := oracleSeries{lset: s.lset}
		for i, ts := range s.times {
			if ts >= mint && ts <= maxt {
				in.times, in.samples = append(in.times, ts), append(in.samples, s.samples[i])
			}
		}
		if len(in.samples) > 0 {
			out = append(out, in)
		}
	}
	return out
}

// storeTarget is a StoreAPI server under test, serving the fixture.
type storeTarget struct {
	name      string
	client    *storeapi.Client
	component string
	maxTime   int64 // advertised
}

// conformanceTargets serves the fixture from queryd (bucket blocks) and from the sidecar
// (a real Prometheus holding the same blocks), with the same external labels.
func conformanceTargets(t *testing.T, f *fixture) []storeTarget {
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	queryd := serveStoreAPI(t, h.srv.RegisterStoreAPI)

	ref := promref.Start(t, promref.Options{BlocksDir: f.localDir, ExternalLabels: ext})
	src, err := sidecar.NewPrometheusSource(sidecar.SourceOptions{PrometheusURL: ref.URL(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	sc := serveStoreAPI(t, storeapi.NewServer(src).Register)
	return []storeTarget{
		{name: "queryd", client: queryd, component: "store", maxTime: 4*hour - 15_000}, // the last sample
		{name: "sidecar", client: sc, component: "sidecar", maxTime: math.MaxInt64},
	}
}

// TestStoreAPIConformance runs the same StoreAPI requests against queryd and the sidecar
// over the same data and checks every answer against the blocks read straight from disk.
func TestStoreAPIConformance(t *testing.T) {
	f := newFixture(t)
	want := oracle(t, f)
	targets := conformanceTargets(t, f)

	m := func(typ labels.MatchType, name, value string) *labels.Matcher {
		return labels.MustNewMatcher(typ, name, value)
	}
	anyName := m(labels.MatchRegexp, "__name__", ".+")
	counter := m(labels.MatchEqual, "__name__", "counter")
	seriesCases := []struct {
		name       string
		mint, maxt int64
		ms         []*labels.Matcher
		wantNone   bool
	}{
		{"all, merged across blocks", 0, 4 * hour, []*labels.Matcher{anyName}, false},
		{"equal", 0, 4 * hour, []*labels.Matcher{counter, m(labels.MatchEqual, "i", "3")}, false},
		{"not equal", 0, 4 * hour, []*labels.Matcher{counter, m(labels.MatchNotEqual, "job", "1")}, false},
		{"regexp", 0, 4 * hour, []*labels.Matcher{anyName, m(labels.MatchRegexp, "i", "1|2")}, false},
		{"not regexp", 0, 4 * hour, []*labels.Matcher{counter, m(labels.MatchNotRegexp, "i", "1.*")}, false},
		{"external equal", 0, 4 * hour, []*labels.Matcher{m(labels.MatchEqual, "cluster", "eu-1"), m(labels.MatchEqual, "__name__", "hist")}, false},
		{"external labels only", 0, 4 * hour, []*labels.Matcher{m(labels.MatchEqual, "cluster", "eu-1"), m(labels.MatchRegexp, "replica", "a|b")}, false},
		{"external equal, other value", 0, 4 * hour, []*labels.Matcher{anyName, m(labels.MatchEqual, "cluster", "us-1")}, true},
		{"external not equal", 0, 4 * hour, []*labels.Matcher{counter, m(labels.MatchNotEqual, "replica", "b")}, false},
		{"external not equal, own value", 0, 4 * hour, []*labels.Matcher{anyName, m(labels.MatchNotEqual, "replica", "a")}, true},
		{"external regexp", 0, 4 * hour, []*labels.Matcher{m(labels.MatchRegexp, "cluster", "eu-.*"), m(labels.MatchEqual, "i", "1")}, false},
		{"external not regexp", 0, 4 * hour, []*labels.Matcher{anyName, m(labels.MatchNotRegexp, "cluster", "eu-.*")}, true},
		{"second block only", 2 * hour, 4*hour - 1, []*labels.Matcher{anyName}, false},
		{"first hour only", 0, hour, []*labels.Matcher{counter}, false},
		{"inside one block", hour + 17_000, hour + 30*60_000, []*labels.Matcher{anyName}, false},
		{"after the data", 5 * hour, 6 * hour, []*labels.Matcher{anyName}, true},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			for _, tc := range seriesCases {
				t.Run(tc.name, func(t *testing.T) {
					exp := expect(want, tc.mint, tc.maxt, tc.ms)
					if tc.wantNone != (len(exp) == 0) {
						t.Fatalf("bad case: the oracle has %d series", len(exp))
					}
					res := seriesOf(t, tg.client, &storepb.SeriesRequest{MinTime: tc.mint, MaxTime: tc.maxt, Matchers: toProto(t, tc.ms)})
					checkSeries(t, res, exp, tc.mint, tc.maxt)
				})
			}
			t.Run("limit", func(t *testing.T) {
				exp := expect(want, 0, 4*hour, []*labels.Matcher{counter})[:3]
				res := seriesOf(t, tg.client, &storepb.SeriesRequest{MinTime: 0, MaxTime: 4 * hour, Limit: 3, Matchers: toProto(t, []*labels.Matcher{counter})})
				checkSeries(t, res, exp, 0, 4*hour)
			})
			t.Run("skip chunks", func(t *testing.T) {
				exp := expect(want, 0, 4*hour, []*labels.Matcher{anyName})
				res := seriesOf(t, tg.client, &storepb.SeriesRequest{MinTime: 0, MaxTime: 4 * hour, SkipChunks: true, Matchers: toProto(t, []*labels.Matcher{anyName})})
				if got, w := seriesNames(res), oracleNames(exp); !slices.Equal(got, w) {
					t.Fatalf("series:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w, "\n"))
				}
				for _, s := range res {
					if len(s.GetChunks()) > 0 {
						t.Fatalf("series %v has %d chunks, want none", s.GetLabels(), len(s.GetChunks()))
					}
				}
			})
			t.Run("without replica labels", func(t *testing.T) {
				exp := expect(want, 0, 4*hour, []*labels.Matcher{counter})
				for i := range exp {
					exp[i].lset = labels.NewBuilder(exp[i].lset).Del("replica").Labels()
				}
				res := seriesOf(t, tg.client, &storepb.SeriesRequest{MinTime: 0, MaxTime: 4 * hour, WithoutReplicaLabels: []string{"replica"}, Matchers: toProto(t, []*labels.Matcher{counter})})
				checkSeries(t, res, exp, 0, 4*hour)
			})
			t.Run("labels", func(t *testing.T) { checkLabels(t, tg.client, want) })
			t.Run("info", func(t *testing.T) {
				info, err := tg.client.Info(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				wantExt := labels.FromMap(ext)
				if info.ComponentType != tg.component || info.MinTime != 0 || info.MaxTime != tg.maxTime ||
					len(info.LabelSets) != 1 || !labels.Equal(info.LabelSets[0], wantExt) || !info.WithoutReplicaLabels {
					t.Fatalf("info %+v, want component %s, labels %s, time range [0, %d]", info, tg.component, wantExt, tg.maxTime)
				}
				tis := info.TSDBInfos
				if len(tis) == 0 || tis[0].MinTime != 0 || tis[len(tis)-1].MaxTime != tg.maxTime ||
					slices.ContainsFunc(tis, func(ti storeapi.TSDBInfo) bool { return !labels.Equal(ti.Labels, wantExt) }) {
					t.Fatalf("tsdb infos %+v, want ranges of %s over [0, %d]", tis, wantExt, tg.maxTime)
				}
			})
		})
	}
}

func toProto(t *testing.T, ms []*labels.Matcher) []*storepb.LabelMatcher {
	t.Helper()
	pms, err := storeapi.MatchersToProto(ms)
	if err != nil {
		t.Fatal(err)
	}
	return pms
}

// seriesOf calls Series and returns the series received, failing on an error or warning.
func seriesOf(t *testing.T, c *storeapi.Client, req *storepb.SeriesRequest) []*storepb.Series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := c.Store().Series(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out []*storepb.Series
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("series: %v", err)
		}
		switch r := resp.GetResult().(type) {
		case *storepb.SeriesResponse_Series:
			out = append(out, r.Series)
		case *storepb.SeriesResponse_Batch:
			out = append(out, r.Batch.GetSeries()...)
		case *storepb.SeriesResponse_Warning:
			t.Fatalf("warning: %s", r.Warning)
		}
	}
}

func seriesNames(ss []*storepb.Series) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = storeapi.LabelsFromProto(s.GetLabels()).String()
	}
	return out
}

func oracleNames(ss []oracleSeries) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.lset.String()
	}
	return out
}

// checkSeries checks that got is exp in order (sorted by the final label sets), each series
// once, with chunks overlapping [mint, maxt] whose hashes are right and whose samples in
// the range are exactly the oracle's.
func checkSeries(t *testing.T, got []*storepb.Series, exp []oracleSeries, mint, maxt int64) {
	t.Helper()
	if g, w := seriesNames(got), oracleNames(exp); !slices.Equal(g, w) {
		t.Fatalf("series:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
	for i, s := range got {
		var samples []string
		for _, c := range s.GetChunks() {
			if c.GetMaxTime() < mint || c.GetMinTime() > maxt {
				t.Fatalf("series %s: chunk [%d, %d] outside the range [%d, %d]", exp[i].lset, c.GetMinTime(), c.GetMaxTime(), mint, maxt)
			}
			if h := xxhash.Sum64(c.GetRaw().GetData()); c.GetRaw().GetHash() != h {
				t.Fatalf("series %s: chunk hash %x, want xxhash64 %x", exp[i].lset, c.GetRaw().GetHash(), h)
			}
			meta, err := storeapi.ChunkFromProto(c)
			if err != nil {
				t.Fatal(err)
			}
			it := meta.Chunk.Iterator(nil)
			for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
				if ts, sample := renderSample(it, vt); ts >= mint && ts <= maxt {
					samples = append(samples, sample)
				}
			}
		}
		if !slices.Equal(samples, exp[i].samples) {
			t.Fatalf("series %s: %d samples, want %d; first %v, want %v", exp[i].lset, len(samples), len(exp[i].samples), first(samples), first(exp[i].samples))
		}
	}
}

func first(ss []string) []string { return ss[:min(3, len(ss))] }

// checkLabels checks LabelNames and LabelValues, with and without matchers, against the
// label sets of the oracle's series.
func checkLabels(t *testing.T, c *storeapi.Client, all []oracleSeries) {
	ctx := context.Background()
	m := func(typ labels.MatchType, name, value string) *labels.Matcher {
		return labels.MustNewMatcher(typ, name, value)
	}
	for _, tc := range []struct {
		name  string
		label string // "" for LabelNames
		ms    []*labels.Matcher
	}{
		{"names", "", nil},
		{"names of histograms", "", []*labels.Matcher{m(labels.MatchEqual, "__name__", "hist")}},
		{"names, external mismatch", "", []*labels.Matcher{m(labels.MatchEqual, "cluster", "us-1")}},
		{"values of job", "job", nil},
		{"values of i, regexp", "i", []*labels.Matcher{m(labels.MatchRegexp, "i", "[0-4]"), m(labels.MatchNotEqual, "__name__", "hist")}},
		{"values of job, not regexp", "job", []*labels.Matcher{m(labels.MatchNotRegexp, "i", "[0-4]")}},
		{"values of an external label", "cluster", nil},
		{"values of an external label, matching", "replica", []*labels.Matcher{m(labels.MatchEqual, "__name__", "hist")}},
		{"values of an external label, no series", "replica", []*labels.Matcher{m(labels.MatchEqual, "__name__", "nothing")}},
		{"values, external matcher", "__name__", []*labels.Matcher{m(labels.MatchEqual, "replica", "a")}},
		{"values, external mismatch", "__name__", []*labels.Matcher{m(labels.MatchNotEqual, "replica", "a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w []string
			for _, s := range expect(all, 0, 4*hour, tc.ms) {
				s.lset.Range(func(l labels.Label) {
					if tc.label == "" {
						w = append(w, l.Name)
					} else if l.Name == tc.label {
						w = append(w, l.Value)
					}
				})
			}
			slices.Sort(w)
			w = slices.Compact(w)
			pms := toProto(t, tc.ms)
			var got []string
			if tc.label == "" {
				resp, err := c.Store().LabelNames(ctx, &storepb.LabelNamesRequest{Start: 0, End: 4 * hour, Matchers: pms})
				if err != nil {
					t.Fatal(err)
				}
				got = resp.GetNames()
			} else {
				resp, err := c.Store().LabelValues(ctx, &storepb.LabelValuesRequest{Label: tc.label, Start: 0, End: 4 * hour, Matchers: pms})
				if err != nil {
					t.Fatal(err)
				}
				got = resp.GetValues()
			}
			if !slices.Equal(got, w) {
				t.Fatalf("got %q, want %q", got, w)
			}
		})
	}
}

// TestStoreAPIInfoBeforeReady: queryd's Info fails with Unavailable until the catalogue
// snapshot is loaded (an empty block set is not an empty bucket), and so does the
// sidecar's until Prometheus answered.
func TestStoreAPIInfoBeforeReady(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	cat := blocktest.CatalogueFunc(func(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
		for _, r := range f.recs {
			apply(r)
		}
		select {
		case <-release:
			synced()
		case <-ctx.Done():
			return nil
		}
		<-ctx.Done()
		return nil
	})
	h := start(t, f.bkt, cat, t.TempDir())
	c := serveStoreAPI(t, h.srv.RegisterStoreAPI)
	ctx := context.Background()
	if _, err := c.Info(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("info before ready: %v, want Unavailable", err)
	}
	close(release)
	h.waitReady(t)
	info, err := c.Info(ctx)
	if err != nil || info.MinTime != 0 || info.MaxTime != 4*hour-15_000 {
		t.Fatalf("info after ready: %+v, %v", info, err)
	}

	// The sidecar, before and after Prometheus answers.
	ref := promref.Start(t, promref.Options{BlocksDir: f.localDir, ExternalLabels: ext})
	src, err := sidecar.NewPrometheusSource(sidecar.SourceOptions{PrometheusURL: ref.URL(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	sc := serveStoreAPI(t, storeapi.NewServer(src).Register)
	if _, err := sc.Info(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("sidecar info before Prometheus answered: %v, want Unavailable", err)
	}
	if err := src.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if info, err := sc.Info(ctx); err != nil || info.ComponentType != "sidecar" {
		t.Fatalf("sidecar info: %+v, %v", info, err)
	}
}

// TestStoreAPIInfoRanges: the time ranges of each external label set, adjacent blocks
// merged (as Prometheus cuts them: [0, 2h), [2h, 4h)), a gap kept.
func TestStoreAPIInfoRanges(t *testing.T) {
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eu, us := map[string]string{"cluster": "eu-1"}, map[string]string{"cluster": "us-1"}
	var recs []schemas.BlockRecord
	for _, b := range []struct {
		ext        map[string]string
		mint, maxt int64
	}{{eu, 0, 2 * hour}, {eu, 2 * hour, 4 * hour}, {us, 0, 2 * hour}, {us, 6 * hour, 8 * hour}} {
		dir := blocktest.Create(t, t.TempDir(), blocktest.FloatSeries("counter", 2, b.mint, b.maxt, 60_000))
		recs = append(recs, blocktest.Upload(t, fs, dir, b.ext, func(m *block.Meta) { m.MaxTime = b.maxt }))
	}
	h := start(t, fs, blocktest.Static(recs, nil), t.TempDir())
	h.waitReady(t)
	info, err := serveStoreAPI(t, h.srv.RegisterStoreAPI).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	euL, usL := labels.FromMap(eu), labels.FromMap(us)
	wantSets := []labels.Labels{euL, usL}
	wantInfos := []storeapi.TSDBInfo{
		{Labels: euL, MinTime: 0, MaxTime: 4*hour - 1},
		{Labels: usL, MinTime: 0, MaxTime: 2*hour - 1},
		{Labels: usL, MinTime: 6 * hour, MaxTime: 8*hour - 1},
	}
	if !slices.EqualFunc(info.LabelSets, wantSets, labels.Equal) || info.MinTime != 0 || info.MaxTime != 8*hour-1 {
		t.Fatalf("info %+v, want label sets %v over [0, %d]", info, wantSets, 8*hour-1)
	}
	if !slices.EqualFunc(info.TSDBInfos, wantInfos, func(a, b storeapi.TSDBInfo) bool {
		return labels.Equal(a.Labels, b.Labels) && a.MinTime == b.MinTime && a.MaxTime == b.MaxTime
	}) {
		t.Fatalf("tsdb infos %+v, want %+v", info.TSDBInfos, wantInfos)
	}
}

// TestStoreAPIAnswersAsQueryd: a querier reading queryd only through its StoreAPI (as a
// Thanos Querier given --endpoint does; here a second queryd without blocks of its own)
// answers the Prometheus HTTP API exactly as queryd does.
func TestStoreAPIAnswersAsQueryd(t *testing.T) {
	f := newFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	c := serveStoreAPI(t, h.srv.RegisterStoreAPI)
	querier := startWith(t, Options{Catalogue: blocktest.Static(nil, nil), Endpoints: []string{c.Addr()}})
	querier.waitHealthy(t, 1)

	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	var queries []promref.Query
	for _, q := range []string{
		`counter`,
		`sum by (job) (rate(counter[5m]))`,
		`resets(counter[4h])`,
		`histogram_quantile(0.9, rate(hist[5m]))`,
		`counter{cluster="eu-1", i=~"1|2"}`,
		`counter{cluster="us-1"}`,
		`count by (cluster, replica) ({__name__=~".+"})`,
	} {
		queries = append(queries,
			promref.Instant(q, at(hour)), promref.Instant(q, at(2*hour)), promref.Instant(q, at(4*hour-1)),
			promref.Range(q, at(0), at(4*hour), time.Minute))
	}
	queries = append(queries,
		promref.LabelNames(), promref.LabelValues("job"), promref.LabelValues("cluster"),
		promref.LabelNames(`{__name__="hist"}`), promref.LabelValues("i", `{job="1"}`),
		promref.Series(at(0), at(4*hour), `{i="2"}`), promref.Series(at(2*hour), at(3*hour), `{__name__="hist"}`))
	promref.Compare(t, h.http.URL, querier.http.URL, queries)
}
