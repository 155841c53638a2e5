package storeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"google.golang.org/grpc"

	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// haPair runs two StoreAPI servers with the external labels {cluster="c", replica="a"|"b"},
// as two sidecars of an HA pair of Prometheus servers:
//   - up{job="x"}: in both, 40 samples every 15s, b scraped 5s after a;
//   - up{job="y"}: only in b.
type haPair struct {
	addrs   [2]string
	servers [2]*grpc.Server
}

func newHAPair(t *testing.T) haPair {
	t.Helper()
	var p haPair
	for i, replica := range []string{"a", "b"} {
		db := openDB(t, t.TempDir())
		offset := int64(i) * 5_000
		appendFloats(t, db, labels.FromStrings("__name__", "up", "job", "x"), offset, step, 40, func(j int) float64 { return float64(j) })
		if replica == "b" {
			appendFloats(t, db, labels.FromStrings("__name__", "up", "job", "y"), offset, step, 40, constant(1))
		}
		p.addrs[i], p.servers[i] = startServer(t, newTSDBSource(db, labels.FromStrings("cluster", "c", "replica", replica)))
	}
	return p
}

func newTestQueryable(t *testing.T, addrs []string, opts QueryableOptions) *Queryable {
	t.Helper()
	var eps []*Endpoint
	for _, a := range addrs {
		e, err := NewEndpoint(a)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		eps = append(eps, e)
	}
	if opts.InfoTimeout == 0 {
		opts.InfoTimeout = time.Second
	}
	q := NewQueryable(eps, opts)
	q.Refresh(context.Background())
	return q
}

type selected struct {
	labels   []string
	samples  map[string][]int64 // timestamps per series
	values   map[string][]float64
	warnings []string
	err      error
}

func selectAll(t *testing.T, q storage.Queryable, hints *storage.SelectHints, ms ...*labels.Matcher) selected {
	t.Helper()
	qr, err := q.Querier(hints.Start, hints.End)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	set := qr.Select(context.Background(), true, hints, ms...)
	res := selected{samples: map[string][]int64{}, values: map[string][]float64{}}
	for set.Next() {
		s := set.At()
		name := s.Labels().String()
		res.labels = append(res.labels, name)
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			res.samples[name] = append(res.samples[name], ts)
			res.values[name] = append(res.values[name], v)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	res.err = set.Err()
	for _, w := range set.Warnings().AsErrors() {
		res.warnings = append(res.warnings, w.Error())
	}
	return res
}

var upMatcher = labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")

func allTime() *storage.SelectHints { return &storage.SelectHints{Start: 0, End: 1 << 40} }

func TestQueryableDedup(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})

	res := selectAll(t, q, allTime(), upMatcher)
	if res.err != nil || len(res.warnings) > 0 {
		t.Fatalf("err %v, warnings %v", res.err, res.warnings)
	}
	want := []string{`{__name__="up", cluster="c", job="x"}`, `{__name__="up", cluster="c", job="y"}`}
	if !slices.Equal(res.labels, want) {
		t.Fatalf("series %v, want %v", res.labels, want)
	}
	// Replica a starts first and has no gaps: the merged series is a's samples.
	x := res.samples[want[0]]
	if len(x) != 40 || x[0] != 0 || x[39] != 39*step {
		t.Errorf("deduplicated x: %d samples from %v, want a's 40 from 0", len(x), x[:min(3, len(x))])
	}

	// Without dedup every replica is a series of its own.
	res = selectAll(t, q.With(QueryOptions{}), allTime(), upMatcher)
	want = []string{
		`{__name__="up", cluster="c", job="x", replica="a"}`,
		`{__name__="up", cluster="c", job="x", replica="b"}`,
		`{__name__="up", cluster="c", job="y", replica="b"}`,
	}
	if !slices.Equal(res.labels, want) {
		t.Fatalf("without dedup: series %v, want %v", res.labels, want)
	}
}

func TestQueryableDedupFillsGaps(t *testing.T) {
	// Replica a misses 10 scrapes in the middle; b fills the gap.
	dbA, dbB := openDB(t, t.TempDir()), openDB(t, t.TempDir())
	lset := labels.FromStrings("__name__", "up", "job", "x")
	appendFloats(t, dbA, lset, 0, step, 20, constant(1))
	appendFloats(t, dbA, lset, 30*step, step, 20, constant(1))
	appendFloats(t, dbB, lset, 5_000, step, 50, constant(2))
	addrA, _ := startServer(t, newTSDBSource(dbA, labels.FromStrings("replica", "a")))
	addrB, _ := startServer(t, newTSDBSource(dbB, labels.FromStrings("replica", "b")))
	q := newTestQueryable(t, []string{addrA, addrB}, QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})

	res := selectAll(t, q, allTime(), upMatcher)
	vals := res.values[`{__name__="up", job="x"}`]
	if !slices.Contains(vals, 2) || vals[0] != 1 {
		t.Fatalf("values %v: want a's samples, then b's in a's gap", vals)
	}
	ts := res.samples[`{__name__="up", job="x"}`]
	for i := 1; i < len(ts); i++ {
		if gap := ts[i] - ts[i-1]; gap > 3*step {
			t.Errorf("gap of %dms at %d after dedup", gap, ts[i])
		}
	}
}

func TestQueryableCounterDedup(t *testing.T) {
	// a counts from 100 and stops after 10 scrapes; b, restarted, counts from 0. For rate()
	// the switch to b must not look like a counter reset.
	dbA, dbB := openDB(t, t.TempDir()), openDB(t, t.TempDir())
	lset := labels.FromStrings("__name__", "requests_total")
	appendFloats(t, dbA, lset, 0, step, 10, func(i int) float64 { return 100 + float64(i) })
	appendFloats(t, dbB, lset, 5_000, step, 30, func(i int) float64 { return float64(i) })
	addrA, _ := startServer(t, newTSDBSource(dbA, labels.FromStrings("replica", "a")))
	addrB, _ := startServer(t, newTSDBSource(dbB, labels.FromStrings("replica", "b")))
	q := newTestQueryable(t, []string{addrA, addrB}, QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})
	m := labels.MustNewMatcher(labels.MatchEqual, "__name__", "requests_total")

	decreases := func(vals []float64) int {
		n := 0
		for i := 1; i < len(vals); i++ {
			if vals[i] < vals[i-1] {
				n++
			}
		}
		return n
	}
	plain := selectAll(t, q, allTime(), m).values[`{__name__="requests_total"}`]
	if decreases(plain) == 0 {
		t.Fatalf("fixture: plain dedup values %v should show the false reset", plain)
	}
	rate := selectAll(t, q, &storage.SelectHints{Start: 0, End: 1 << 40, Func: "rate"}, m).values[`{__name__="requests_total"}`]
	if decreases(rate) != 0 {
		t.Errorf("dedup for rate() decreases: %v", rate)
	}
}

func TestQueryablePartialResponse(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})
	p.servers[1].Stop() // b fails after the refresh that found it healthy

	res := selectAll(t, q, allTime(), upMatcher)
	if res.err != nil {
		t.Fatalf("WARN: err %v", res.err)
	}
	if !slices.Equal(res.labels, []string{`{__name__="up", cluster="c", job="x"}`}) {
		t.Errorf("WARN: series %v, want a's only", res.labels)
	}
	if len(res.warnings) != 1 || !strings.Contains(res.warnings[0], p.addrs[1]) {
		t.Errorf("WARN: warnings %v, want one naming %s", res.warnings, p.addrs[1])
	}

	res = selectAll(t, q.With(QueryOptions{ReplicaLabels: []string{"replica"}, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT}), allTime(), upMatcher)
	if res.err == nil || !strings.Contains(res.err.Error(), p.addrs[1]) {
		t.Errorf("ABORT: err %v, want the failure of %s", res.err, p.addrs[1])
	}

	// After the next refresh the failed endpoint is not queried at all.
	q.Refresh(context.Background())
	res = selectAll(t, q.With(QueryOptions{PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT}), allTime(), upMatcher)
	if res.err != nil || len(res.labels) != 1 {
		t.Errorf("after refresh: err %v, series %v; want a's series only", res.err, res.labels)
	}
}

func TestQueryableStores(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{})
	sts := q.Stores()
	if len(sts) != 2 {
		t.Fatalf("%d stores, want 2", len(sts))
	}
	for _, st := range sts {
		if !st.Healthy || st.LastError != nil || st.ComponentType != "sidecar" || st.MinTime > 5_000 || st.MaxTime < 39*step || len(st.LabelSets) != 1 || st.LastCheck.IsZero() {
			t.Errorf("store %+v, want healthy with its range and labels", st)
		}
	}

	p.servers[1].Stop()
	q.Refresh(context.Background())
	byName := map[string]EndpointStatus{}
	for _, st := range q.Stores() {
		byName[st.Name] = st
	}
	if b := byName[p.addrs[1]]; b.Healthy || b.LastError == nil || len(b.LabelSets) != 1 {
		t.Errorf("stopped store %+v, want unhealthy with an error and its last label sets", b)
	}
	if a := byName[p.addrs[0]]; !a.Healthy {
		t.Errorf("store a %+v, want healthy", a)
	}

	js, err := json.Marshal(byName[p.addrs[0]])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name":"` + p.addrs[0] + `"`, `"lastError":null`, `"labelSets":[{"cluster":"c","replica":"a"}]`, `"minTime":0`, `"lastCheck":"`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("JSON %s lacks %s", js, want)
		}
	}
}

func TestQueryableLabels(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		q         storage.Queryable
		labelName string // "" for label names
		ms        []*labels.Matcher
		want      []string
	}{
		{"names, dedup", q, "", nil, []string{"__name__", "cluster", "job"}},
		{"names, no dedup", q.With(QueryOptions{}), "", nil, []string{"__name__", "cluster", "job", "replica"}},
		{"names, matcher", q, "", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "replica", "a")}, []string{"__name__", "cluster", "job"}},
		{"values", q, "job", nil, []string{"x", "y"}},
		{"values, external matcher prunes", q.With(QueryOptions{}), "job", []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "replica", "a")}, []string{"x"}},
		{"replica values, dedup", q, "replica", nil, nil},
		{"replica values, no dedup", q.With(QueryOptions{}), "replica", nil, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			qr, err := tc.q.Querier(0, 1<<40)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			if tc.labelName == "" {
				got, _, err = qr.LabelNames(ctx, nil, tc.ms...)
			} else {
				got, _, err = qr.LabelValues(ctx, tc.labelName, nil, tc.ms...)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQueryableSeriesOnlyAndTrimming(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})

	res := selectAll(t, q, &storage.SelectHints{Start: 0, End: 1 << 40, Func: "series"}, upMatcher)
	if len(res.labels) != 2 || len(res.samples) != 0 {
		t.Errorf("series only: %v with samples %v, want 2 series, no samples", res.labels, res.samples)
	}

	res = selectAll(t, q, &storage.SelectHints{Start: 10 * step, End: 20 * step}, upMatcher)
	x := res.samples[`{__name__="up", cluster="c", job="x"}`]
	if len(x) == 0 || x[0] < 10*step || x[len(x)-1] > 20*step {
		t.Errorf("samples %v outside [%d, %d]", x, 10*step, 20*step)
	}

	res = selectAll(t, q, &storage.SelectHints{Start: 0, End: 1 << 40, Limit: 1}, upMatcher)
	if len(res.labels) != 1 {
		t.Errorf("limit 1: %v", res.labels)
	}
}

func TestQueryablePromQL(t *testing.T) {
	p := newHAPair(t)
	q := newTestQueryable(t, p.addrs[:], QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	for expr, want := range map[string]float64{
		`count(up)`:                 2,
		`sum(up{job="x"})`:          30, // sample 30 of a at 450s
		`count(up{replica="b"})`:    2,  // matchers on replica labels still prune
		`count(up{cluster="none"})`: 0,
	} {
		qry, err := engine.NewInstantQuery(context.Background(), q, nil, expr, time.UnixMilli(30*step))
		if err != nil {
			t.Fatal(err)
		}
		res := qry.Exec(context.Background())
		if res.Err != nil {
			t.Fatalf("%s: %v", expr, res.Err)
		}
		vec, _ := res.Vector()
		got := 0.0
		if len(vec) > 0 {
			got = vec[0].F
		}
		if got != want {
			t.Errorf("%s = %v (%v), want %v", expr, got, fmt.Sprint(vec), want)
		}
	}
}

func TestEndpointMatches(t *testing.T) {
	info := RemoteInfo{Info: Info{
		MinTime: 100, MaxTime: 200,
		LabelSets: []labels.Labels{labels.FromStrings("cluster", "eu", "replica", "a"), labels.FromStrings("cluster", "us")},
	}}
	m := func(t labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(t, n, v) }
	for _, tc := range []struct {
		name       string
		info       RemoteInfo
		mint, maxt int64
		ms         []*labels.Matcher
		want       bool
	}{
		{"inside", info, 120, 130, nil, true},
		{"overlaps start", info, 0, 100, nil, true},
		{"overlaps end", info, 200, 300, nil, true},
		{"before", info, 0, 99, nil, false},
		{"after", info, 201, 300, nil, false},
		{"label set matches", info, 0, 300, []*labels.Matcher{m(labels.MatchEqual, "cluster", "us")}, true},
		{"no label set matches", info, 0, 300, []*labels.Matcher{m(labels.MatchEqual, "cluster", "ap")}, false},
		{"all matchers must hold in one set", info, 0, 300, []*labels.Matcher{m(labels.MatchEqual, "cluster", "eu"), m(labels.MatchEqual, "replica", "b")}, false},
		{"absent in the set that matches", info, 0, 300, []*labels.Matcher{m(labels.MatchEqual, "cluster", "us"), m(labels.MatchEqual, "replica", "b")}, true},
		{"absent label passes", info, 0, 300, []*labels.Matcher{m(labels.MatchEqual, "job", "x")}, true},
		{"regexp", info, 0, 300, []*labels.Matcher{m(labels.MatchRegexp, "cluster", "e.")}, true},
		{"no label sets match all", RemoteInfo{Info: Info{MinTime: 0, MaxTime: 10}}, 0, 10, []*labels.Matcher{m(labels.MatchEqual, "cluster", "ap")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.info.matches(tc.mint, tc.maxt, tc.ms); got != tc.want {
				t.Errorf("matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQueryableHistograms(t *testing.T) {
	db := openDB(t, t.TempDir())
	app := db.Appender(context.Background())
	for i := range int64(20) {
		if _, err := app.AppendHistogram(0, labels.FromStrings("__name__", "hist"), i*step, tsdbutil.GenerateTestHistogram(i), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := app.AppendHistogram(0, labels.FromStrings("__name__", "fhist"), i*step, nil, tsdbutil.GenerateTestFloatHistogram(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, newTSDBSource(db, labels.FromStrings("replica", "a")))
	q := newTestQueryable(t, []string{addr}, QueryableOptions{QueryOptions: QueryOptions{ReplicaLabels: []string{"replica"}}})
	qr, err := q.Querier(0, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	set := qr.Select(context.Background(), true, &storage.SelectHints{Start: 5 * step, End: 1 << 40}, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".*hist"))
	want := map[string]chunkenc.ValueType{`{__name__="fhist"}`: chunkenc.ValFloatHistogram, `{__name__="hist"}`: chunkenc.ValHistogram}
	n := 0
	for set.Next() {
		s := set.At()
		it := s.Iterator(nil)
		count := 0
		for v := it.Next(); v != chunkenc.ValNone; v = it.Next() {
			if v != want[s.Labels().String()] {
				t.Fatalf("%s: sample of type %v", s.Labels(), v)
			}
			var ts int64
			if v == chunkenc.ValHistogram {
				ts, _ = it.AtHistogram(nil)
			} else {
				ts, _ = it.AtFloatHistogram(nil)
			}
			if ts != int64(5+count)*step {
				t.Fatalf("%s: sample %d at %d", s.Labels(), count, ts)
			}
			count++
		}
		if count != 15 {
			t.Errorf("%s: %d samples, want 15", s.Labels(), count)
		}
		n++
	}
	if set.Err() != nil || n != 2 {
		t.Fatalf("err %v, %d series; want 2", set.Err(), n)
	}
}

func TestQueryableRunRefreshes(t *testing.T) {
	src, _ := jobsFixture(t)
	src.ready.Store(false)
	addr, _ := startServer(t, src)
	e, err := NewEndpoint(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	q := NewQueryable([]*Endpoint{e}, QueryableOptions{InfoInterval: 20 * time.Millisecond, InfoTimeout: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func(EndpointStatus) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(q.Stores()[0]) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, q.Stores()[0])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("a failed check while not ready", func(st EndpointStatus) bool {
		return !st.LastCheck.IsZero() && !st.Healthy && st.LastError != nil && strings.Contains(*st.LastError, "not ready")
	})
	src.ready.Store(true)
	waitFor("healthy once ready", func(st EndpointStatus) bool { return st.Healthy })
	if st := q.Stores()[0]; st.ComponentType != "sidecar" || len(st.LabelSets) != 1 {
		t.Errorf("status %+v", st)
	}
}
