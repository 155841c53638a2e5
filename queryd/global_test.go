package queryd

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// startWith runs a Server with opts (a filesystem bucket, a data directory and a registry
// of its own unless given) until the test ends.
func startWith(t testing.TB, opts Options) *harness {
	t.Helper()
	if opts.Bucket == nil {
		fs, err := objstore.NewFilesystem(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		opts.Bucket = fs
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	reg := prometheus.NewRegistry()
	opts.Registerer, opts.Gatherer, opts.Logger = reg, reg, zerolog.Nop()
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	h := &harness{srv: srv, http: httptest.NewServer(srv.Handler()), reg: reg}
	h.stop = func() {
		h.http.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	t.Cleanup(h.stop)
	h.waitReady(t)
	return h
}

// waitHealthy waits until n endpoints answered Info.
func (h *harness) waitHealthy(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		healthy := 0
		for _, st := range h.srv.Stores() {
			if st.Healthy {
				healthy++
			}
		}
		if healthy >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d endpoints healthy: %+v", healthy, n, h.srv.Stores())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tsdbSource serves a Prometheus TSDB over the StoreAPI, as a sidecar serves Prometheus's
// head: the newest data of one replica.
type tsdbSource struct {
	db  *tsdb.DB
	ext labels.Labels
}

func (s tsdbSource) Info(context.Context) (storeapi.Info, error) {
	mint, maxt := s.db.Head().MinTime(), s.db.Head().MaxTime()
	for _, b := range s.db.Blocks() {
		mint = min(mint, b.Meta().MinTime)
	}
	return storeapi.Info{ComponentType: "sidecar", LabelSets: []labels.Labels{s.ext}, MinTime: mint, MaxTime: maxt}, nil
}

func (s tsdbSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := s.db.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return storeapi.WithExternalLabels(q, s.ext), nil
}

// failingSource answers Info but fails every read, as a sidecar whose Prometheus is down.
type failingSource struct{ ext labels.Labels }

func (s failingSource) Info(context.Context) (storeapi.Info, error) {
	return storeapi.Info{LabelSets: []labels.Labels{s.ext}, MinTime: math.MinInt64, MaxTime: math.MaxInt64}, nil
}

func (failingSource) ChunkQuerier(int64, int64) (storage.ChunkQuerier, error) {
	return nil, errors.New("prometheus is down")
}

// counterSamples is a counter scraped every 15s over [from, to), growing by 1 a second from
// base.
func counterSamples(from, to int64, base float64) []chunks.Sample {
	var out []chunks.Sample
	for ts := from; ts < to; ts += 15_000 {
		out = append(out, blocktest.Sample{TS: ts, V: base + float64(ts)/1000})
	}
	return out
}

var statuses = map[string]float64{"200": 0, "500": 1000}

// haPair is an HA pair of Prometheus servers scraping req_total{status}: replica a's blocks
// [0, 2h) are in the bucket (shipped), replica b's data [5s, 3h) is in a TSDB served over
// the StoreAPI (its sidecar); b started later, so its counters are 100 lower.
type haPair struct {
	bkt   objstore.Bucket
	recs  []schemas.BlockRecord
	sideB string // replica b's StoreAPI address
}

func newHAPair(t *testing.T) haPair {
	t.Helper()
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := haPair{bkt: fs}
	var series []storage.Series
	for status, base := range statuses {
		series = append(series, storage.NewListSeries(labels.FromStrings("__name__", "req_total", "status", status), counterSamples(0, 2*hour, base)))
	}
	dir := blocktest.Create(t, t.TempDir(), series)
	p.recs = append(p.recs, blocktest.Upload(t, fs, dir, map[string]string{"cluster": "eu-1", "replica": "a"}, nil))

	db, err := tsdb.Open(t.TempDir(), promslog.NewNopLogger(), nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender(context.Background())
	for status, base := range statuses {
		lset := labels.FromStrings("__name__", "req_total", "status", status)
		for _, s := range counterSamples(5_000, 3*hour, base-100) {
			if _, err := app.Append(0, lset, s.T(), s.F()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	c := serveStoreAPI(t, storeapi.NewServer(tsdbSource{db: db, ext: labels.FromStrings("cluster", "eu-1", "replica", "b")}).Register)
	p.sideB = c.Addr()
	return p
}

// queryResult is the parsed answer of /api/v1/query.
type queryResult struct {
	Status    string   `json:"status"`
	ErrorType string   `json:"errorType"`
	Warnings  []string `json:"warnings"`
	Data      struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// instant runs an instant query at ts (ms) with extra parameters.
func (h *harness) instant(t *testing.T, query string, ts int64, extra url.Values) (int, queryResult) {
	t.Helper()
	params := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(ts)/1000, 'f', 3, 64)}}
	for k, v := range extra {
		params[k] = v
	}
	code, body := h.get(t, "/api/v1/query", params)
	var res queryResult
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("%s: %v: %s", query, err, body)
	}
	return code, res
}

// value runs a query whose answer is one sample and returns it.
func (h *harness) value(t *testing.T, query string, ts int64, extra url.Values) float64 {
	t.Helper()
	code, res := h.instant(t, query, ts, extra)
	if code != http.StatusOK || len(res.Data.Result) != 1 {
		t.Fatalf("%s at %d: HTTP %d, %+v", query, ts, code, res)
	}
	v, err := strconv.ParseFloat(res.Data.Result[0].Value[1].(string), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestGlobalViewDedup: queryd with --query.replica-label replica reads its own blocks of
// replica a and replica b's sidecar as one HA pair: every series once, one replica's
// values, the sidecar's newer data after the bucket's ends, and no counter reset where the
// merged stream switches replica.
func TestGlobalViewDedup(t *testing.T) {
	p := newHAPair(t)
	h := startWith(t, Options{Bucket: p.bkt, Catalogue: blocktest.Static(p.recs, nil), Endpoints: []string{p.sideB}, ReplicaLabels: []string{"replica"}})
	h.waitHealthy(t, 1)
	noDedup := url.Values{"dedup": {"false"}}

	for _, tc := range []struct {
		query string
		at    int64
		extra url.Values
		want  float64
	}{
		{`count(req_total)`, hour, nil, 2},
		{`count(req_total)`, hour, noDedup, 4},
		{`count(req_total)`, hour, url.Values{"dedup": {"true"}}, 2},
		// Replica a's samples (every 15s from 0) win: they come first.
		{`sum(req_total)`, hour, nil, 3600 + 3600 + 1000},
		{`sum(req_total)`, hour, noDedup, 3600 + 3600 + 1000 + 3490 + 3490 + 1000}, // b's last sample at 3590s
		// After the bucket's blocks end, the sidecar's data (last sample at 8990s).
		{`sum(req_total)`, 2*hour + 30*60_000, nil, 8890 + 8890 + 1000},
		{`count(req_total{replica="b"})`, hour, nil, 2},
		{`count(req_total{replica="a"})`, 2*hour + 30*60_000, nil, 0},
		// Counters: the switch from a to b (100 lower) is not a reset.
		{`sum(resets(req_total[1h]))`, 2*hour + 30*60_000, nil, 0},
		{`max(max_over_time(rate(req_total[1m])[2h:15s]))`, 3 * hour, nil, 1},
	} {
		if tc.query == `count(req_total{replica="a"})` {
			if code, res := h.instant(t, tc.query, tc.at, tc.extra); code != http.StatusOK || len(res.Data.Result) != 0 {
				t.Errorf("%s: HTTP %d, %+v, want nothing", tc.query, code, res)
			}
			continue
		}
		if got := h.value(t, tc.query, tc.at, tc.extra); math.Abs(got-tc.want) > 1e-9*math.Abs(tc.want) {
			t.Errorf("%s at %d %v: %v, want %v", tc.query, tc.at, tc.extra, got, tc.want)
		}
	}

	// Series and labels without the replica label; with dedup=false, with it.
	for _, tc := range []struct {
		path   string
		params url.Values
		want   string
	}{
		{"/api/v1/series", url.Values{"match[]": {"req_total"}}, `[{"__name__":"req_total","cluster":"eu-1","status":"200"},{"__name__":"req_total","cluster":"eu-1","status":"500"}]`},
		{"/api/v1/labels", nil, `["__name__","cluster","status"]`},
		{"/api/v1/labels", noDedup, `["__name__","cluster","replica","status"]`},
		{"/api/v1/label/replica/values", nil, `[]`},
		{"/api/v1/label/replica/values", noDedup, `["a","b"]`},
	} {
		code, body := h.get(t, tc.path, tc.params)
		var res struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &res); err != nil || code != http.StatusOK || string(res.Data) != tc.want {
			t.Errorf("%s?%s: HTTP %d %s, want data %s", tc.path, tc.params.Encode(), code, body, tc.want)
		}
	}
	if code, body := h.get(t, "/api/v1/query", url.Values{"query": {"req_total"}, "dedup": {"maybe"}}); code != http.StatusBadRequest {
		t.Errorf("dedup=maybe: HTTP %d %s, want 400", code, body)
	}
}

// TestGlobalViewReplicaLabelsParam: replicaLabels[] turns deduplication on for one request.
func TestGlobalViewReplicaLabelsParam(t *testing.T) {
	p := newHAPair(t)
	h := startWith(t, Options{Bucket: p.bkt, Catalogue: blocktest.Static(p.recs, nil), Endpoints: []string{p.sideB}})
	h.waitHealthy(t, 1)
	if got := h.value(t, `count(req_total)`, hour, nil); got != 4 {
		t.Errorf("without replica labels: %v series, want 4", got)
	}
	if got := h.value(t, `count(req_total)`, hour, url.Values{"replicaLabels[]": {"replica"}}); got != 2 {
		t.Errorf("with replicaLabels[]=replica: %v series, want 2", got)
	}
}

// TestGlobalViewBucketHA: without endpoints, blocks of both replicas in the bucket are
// deduplicated too.
func TestGlobalViewBucketHA(t *testing.T) {
	p := newHAPair(t)
	var series []storage.Series
	for status, base := range statuses {
		series = append(series, storage.NewListSeries(labels.FromStrings("__name__", "req_total", "status", status), counterSamples(5_000, 2*hour, base-100)))
	}
	dir := blocktest.Create(t, t.TempDir(), series)
	recs := append(slices.Clone(p.recs), blocktest.Upload(t, p.bkt, dir, map[string]string{"cluster": "eu-1", "replica": "b"}, nil))
	h := startWith(t, Options{Bucket: p.bkt, Catalogue: blocktest.Static(recs, nil), ReplicaLabels: []string{"replica"}})
	if got := h.value(t, `sum(req_total)`, hour, nil); got != 8200 {
		t.Errorf("sum: %v, want replica a's 8200", got)
	}
	if got := h.value(t, `count(req_total)`, hour, url.Values{"dedup": {"false"}}); got != 4 {
		t.Errorf("dedup=false: %v series, want 4", got)
	}
}

// TestGlobalViewPartialResponse: a failing endpoint is a warning by default and with
// partial_response=true, an error with partial_response=false or when partial responses
// are disabled.
func TestGlobalViewPartialResponse(t *testing.T) {
	p := newHAPair(t)
	down := serveStoreAPI(t, storeapi.NewServer(failingSource{ext: labels.FromStrings("cluster", "us-1")}).Register)
	for _, tc := range []struct {
		name     string
		strategy storepb.PartialResponseStrategy
		param    string
		wantErr  bool
	}{
		{"default warns", storepb.PartialResponseStrategy_WARN, "", false},
		{"partial_response=false fails", storepb.PartialResponseStrategy_WARN, "false", true},
		{"disabled fails", storepb.PartialResponseStrategy_ABORT, "", true},
		{"disabled, partial_response=true warns", storepb.PartialResponseStrategy_ABORT, "true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startWith(t, Options{
				Bucket: p.bkt, Catalogue: blocktest.Static(p.recs, nil), Endpoints: []string{p.sideB, down.Addr()},
				ReplicaLabels: []string{"replica"}, PartialResponse: tc.strategy,
			})
			h.waitHealthy(t, 2)
			extra := url.Values{}
			if tc.param != "" {
				extra.Set("partial_response", tc.param)
			}
			code, res := h.instant(t, `count(req_total)`, hour, extra)
			switch {
			case tc.wantErr && (code == http.StatusOK || res.Status != "error"):
				t.Fatalf("HTTP %d %+v, want an error", code, res)
			case !tc.wantErr && (code != http.StatusOK || len(res.Data.Result) != 1 || len(res.Warnings) == 0):
				t.Fatalf("HTTP %d %+v, want an answer with a warning", code, res)
			}
		})
	}
}

// TestStoresEndpoint: /api/v1/stores lists the endpoints by component type, with health,
// label sets and time ranges, as the Thanos Querier does.
func TestStoresEndpoint(t *testing.T) {
	p := newHAPair(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	h := startWith(t, Options{Catalogue: blocktest.Static(nil, nil), Endpoints: []string{p.sideB, closed}})
	h.waitHealthy(t, 1)
	waitChecked(t, h.srv)
	code, body := h.get(t, "/api/v1/stores", nil)
	var res struct {
		Status string `json:"status"`
		Data   map[string][]struct {
			Name      string              `json:"name"`
			Healthy   bool                `json:"healthy"`
			LastCheck time.Time           `json:"lastCheck"`
			LastError *string             `json:"lastError"`
			LabelSets []map[string]string `json:"labelSets"`
			MinTime   int64               `json:"minTime"`
			MaxTime   int64               `json:"maxTime"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != http.StatusOK || res.Status != "success" {
		t.Fatalf("HTTP %d %s (%v)", code, body, err)
	}
	sc := res.Data["sidecar"]
	if len(sc) != 1 || sc[0].Name != p.sideB || !sc[0].Healthy || sc[0].LastError != nil || sc[0].LastCheck.IsZero() ||
		len(sc[0].LabelSets) != 1 || sc[0].LabelSets[0]["replica"] != "b" || sc[0].MinTime != 5_000 || sc[0].MaxTime != 3*hour-15_000+5_000 {
		t.Errorf("sidecar group: %s", body)
	}
	un := res.Data[unknownComponent]
	if len(un) != 1 || un[0].Name != closed || un[0].Healthy || un[0].LastError == nil {
		t.Errorf("unreachable endpoint: %s", body)
	}
}

// waitChecked waits until every endpoint of srv has been checked once (an unreachable one
// only after its Info timeout).
func waitChecked(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		checked := 0
		for _, st := range srv.Stores() {
			if !st.LastCheck.IsZero() {
				checked++
			}
		}
		if checked == len(srv.Stores()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints not all checked: %+v", srv.Stores())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
