package queryd

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/httpapi"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

const hour = int64(3600_000)

var ext = map[string]string{"cluster": "eu-1", "replica": "a"}

// fixture is two adjacent blocks [0,2h) and [2h,4h) of 10 counters (every 15s) and 2
// native histograms (every minute), written under localDir (so a tsdb.DB can read the
// same blocks) and uploaded to bkt with external labels ext.
type fixture struct {
	bkt      *blocktest.CountingBucket
	localDir string
	recs     []schemas.BlockRecord
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{bkt: blocktest.NewCountingBucket(fs), localDir: t.TempDir()}
	for _, r := range [][2]int64{{0, 2 * hour}, {2 * hour, 4 * hour}} {
		series := append(blocktest.FloatSeries("counter", 10, r[0], r[1], 15_000), blocktest.HistogramSeries("hist", 2, r[0], r[1], 60_000)...)
		dir := blocktest.Create(t, f.localDir, series)
		f.recs = append(f.recs, blocktest.Upload(t, f.bkt, dir, ext, nil))
	}
	return f
}

// openDB opens the fixture's blocks directly with Prometheus' tsdb.
func (f *fixture) openDB(t testing.TB) storage.Queryable {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(f.localDir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := tsdb.OpenDBReadOnly(f.localDir, t.TempDir(), promslog.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

type harness struct {
	srv  *Server
	http *httptest.Server
	reg  *prometheus.Registry
	stop func()
}

// start runs a Server on cat until the test ends (or stop is called).
func start(t testing.TB, bkt objstore.Bucket, cat blocktest.CatalogueFunc, dataDir string) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := New(Options{
		Bucket:     bkt,
		Catalogue:  cat,
		DataDir:    dataDir,
		Logger:     zerolog.Nop(),
		Registerer: reg,
		Gatherer:   reg,
		BuildInfo:  httpapi.BuildInfo{Version: "0.0.1-test", Revision: "r", Branch: "b", BuildUser: "u", BuildDate: "d", GoVersion: "g"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	h := &harness{srv: srv, http: httptest.NewServer(srv.Handler()), reg: reg}
	var stopped bool
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
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
	return h
}

func (h *harness) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.srv.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) get(t testing.TB, path string, params url.Values) (int, string) {
	t.Helper()
	resp, err := http.Get(h.http.URL + path + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func testEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		MaxSamples:               DefaultMaxSamples,
		Timeout:                  DefaultQueryTimeout,
		LookbackDelta:            DefaultLookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 { return defaultSubqueryStep.Milliseconds() },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	})
}

// withoutExternal renders a result with the external labels removed and series sorted,
// to compare it with the same query on the blocks without their external labels.
func withoutExternal(v parser.Value) string {
	strip := func(ls labels.Labels) labels.Labels {
		return labels.NewBuilder(ls).Del("cluster", "replica").Labels()
	}
	var lines []string
	switch v := v.(type) {
	case promql.Matrix:
		for _, s := range v {
			s.Metric = strip(s.Metric)
			lines = append(lines, s.String())
		}
	case promql.Vector:
		for _, s := range v {
			s.Metric = strip(s.Metric)
			lines = append(lines, s.String())
		}
	default:
		lines = append(lines, v.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func TestQueriesMatchTSDB(t *testing.T) {
	f := newFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	db := f.openDB(t)
	engine := testEngine()
	ctx := context.Background()

	queries := []string{
		`counter`,
		`counter{i="3"}`,
		`counter{i=~"1|2"}`,
		`rate(counter[5m])`,
		`sum by (job) (rate(counter[5m]))`,
		`increase(counter[1h])`,
		`resets(counter[4h])`,
		`max_over_time(counter[30m])`,
		`count by (job) (counter)`,
		`counter offset 1h`,
		`counter @ 7200`,
		`hist`,
		`histogram_quantile(0.9, rate(hist[5m]))`,
		`sum(rate(hist[10m]))`,
		`{__name__=~"counter|hist", i="1"}`,
		`avg_over_time(counter[10m:1m])`,
	}
	for _, q := range queries {
		t.Run(q, func(t *testing.T) {
			run := func(qa storage.Queryable, instant time.Time) string {
				var qry promql.Query
				var err error
				if instant.IsZero() {
					qry, err = engine.NewRangeQuery(ctx, qa, nil, q, time.Unix(0, 0), time.Unix(4*3600, 0), time.Minute)
				} else {
					qry, err = engine.NewInstantQuery(ctx, qa, nil, q, instant)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer qry.Close()
				res := qry.Exec(ctx)
				if res.Err != nil {
					t.Fatal(res.Err)
				}
				return withoutExternal(res.Value)
			}
			for _, at := range []time.Time{{}, time.Unix(3600, 0), time.UnixMilli(2*hour - 1), time.UnixMilli(2 * hour), time.Unix(4*3600-1, 0)} {
				want, got := run(db, at), run(h.srv.Queryable(), at)
				if got != want {
					t.Fatalf("at %v:\ngot  %.2000s\nwant %.2000s", at, got, want)
				}
				if want == "" && !strings.Contains(q, "@") {
					t.Fatalf("at %v: empty result", at)
				}
			}
		})
	}

	if n := f.bkt.Calls("Iter", ""); n != 0 {
		t.Fatalf("the bucket was listed %d times", n)
	}
}

func TestHTTPServer(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	cat := blocktest.CatalogueFunc(func(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
		for _, r := range f.recs {
			apply(r)
		}
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		synced()
		<-ctx.Done()
		return ctx.Err()
	})
	h := start(t, f.bkt, cat, t.TempDir())

	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/-/healthy", 200, "queryd is Healthy.\n"},
		{"/-/ready", 503, "queryd is not ready: the block catalogue is still loading.\n"},
		{"/api/v1/query", 503, `{"status":"error","errorType":"unavailable","error":"queryd is not ready: the block catalogue is still loading"}`},
		{"/api/v1/labels", 503, `{"status":"error","errorType":"unavailable","error":"queryd is not ready: the block catalogue is still loading"}`},
	} {
		if code, body := h.get(t, tc.path, url.Values{"query": {"1"}}); code != tc.code || body != tc.body {
			t.Fatalf("before sync %s: %d %q", tc.path, code, body)
		}
	}
	close(release)
	h.waitReady(t)

	for _, tc := range []struct {
		path   string
		params url.Values
		body   string
	}{
		{"/-/ready", nil, "queryd is Ready.\n"},
		{"/api/v1/query", url.Values{"query": {`counter{i="4"}`}, "time": {"7200"}},
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"counter","cluster":"eu-1","i":"4","job":"job-1","replica":"a"},"value":[7200,"2400"]}]}}`},
		{"/api/v1/query", url.Values{"query": {`count(counter{cluster!="eu-1"}) or vector(0)`}, "time": {"7200"}},
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[7200,"0"]}]}}`},
		{"/api/v1/series", url.Values{"match[]": {`{cluster=~"eu.*", i="9"}`}},
			`{"status":"success","data":[{"__name__":"counter","cluster":"eu-1","i":"9","job":"job-0","replica":"a"}]}`},
		{"/api/v1/labels", nil, `{"status":"success","data":["__name__","cluster","i","job","replica"]}`},
		{"/api/v1/label/replica/values", nil, `{"status":"success","data":["a"]}`},
		{"/api/v1/label/cluster/values", url.Values{"match[]": {`hist`}}, `{"status":"success","data":["eu-1"]}`},
		{"/api/v1/label/i/values", url.Values{"match[]": {`hist{cluster="eu-1"}`}}, `{"status":"success","data":["0","1"]}`},
		{"/api/v1/label/i/values", url.Values{"match[]": {`hist{cluster="us-1"}`}}, `{"status":"success","data":[]}`},
		{"/api/v1/status/buildinfo", nil, `{"status":"success","data":{"version":"0.0.1-test","revision":"r","branch":"b","buildUser":"u","buildDate":"d","goVersion":"g"}}`},
	} {
		if code, body := h.get(t, tc.path, tc.params); code != 200 || body != tc.body {
			t.Fatalf("%s %v: %d %s\nwant %s", tc.path, tc.params, code, body, tc.body)
		}
	}

	_, metrics := h.get(t, "/metrics", nil)
	for _, want := range []string{
		`http_requests_total{code="200",handler="/api/v1/query"} 2`,
		`http_requests_total{code="503",handler="/api/v1/query"} 1`,
		`http_request_duration_seconds_count{handler="/api/v1/series"} 1`,
		`blockflow_queryd_index_downloads_total 2`,
		`blockflow_queryd_queryable_blocks 2`,
		`blockflow_queryd_catalogue_blocks{state="live"} 2`,
		`prometheus_engine_queries 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestPromtool(t *testing.T) {
	promtool := filepath.Join(os.Getenv("HOME"), ".cache", "blockflow", "bin", "promtool")
	if _, err := os.Stat(promtool); err != nil {
		t.Skipf("promtool is not installed (scripts/test-deps.sh): %v", err)
	}
	f := newFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"query", "instant", "--time=7200", h.http.URL, `counter{i="4"}`},
			`counter{cluster="eu-1", i="4", job="job-1", replica="a"} => 2400 @[7200]`},
		{[]string{"query", "range", "--start=0", "--end=120", "--step=60s", h.http.URL, `counter{i="0"}`},
			"counter{cluster=\"eu-1\", i=\"0\", job=\"job-0\", replica=\"a\"} =>\n0 @[0]\n4 @[60]\n8 @[120]"},
		{[]string{"query", "series", "--start=0", "--end=14400", "--match", `hist{i="1"}`, h.http.URL},
			`{__name__="hist", cluster="eu-1", i="1", replica="a"}`},
		{[]string{"query", "labels", "--start=0", "--end=14400", h.http.URL, "job"},
			"job-0\njob-1\njob-2"},
	} {
		out, err := exec.Command(promtool, tc.args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Fatalf("promtool %v: %v\n%s\nwant\n%s", tc.args, err, out, tc.want)
		}
	}
}

func TestCompactionAndDeletion(t *testing.T) {
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bkt := blocktest.NewCountingBucket(fs)
	upload := func(name string, edit func(*block.Meta)) schemas.BlockRecord {
		series := blocktest.FloatSeries(name, 1, 0, 2*hour, 60_000)
		return blocktest.Upload(t, bkt, blocktest.Create(t, t.TempDir(), series), ext, edit)
	}
	// x and y are level-1 blocks; xy is their compaction (with its own series name, so a
	// query shows which blocks are read).
	x := upload("in_x", nil)
	y := upload("in_y", nil)
	xy := upload("in_xy", func(m *block.Meta) {
		m.Compaction.Level = 2
		m.Compaction.Sources = []ulid.ULID{x.ULID, y.ULID}
	})
	updates := make(chan schemas.BlockRecord)
	dataDir := t.TempDir()
	h := start(t, bkt, blocktest.Static([]schemas.BlockRecord{x, y}, updates), dataDir)
	h.waitReady(t)

	names := func() []string {
		t.Helper()
		_, body := h.get(t, "/api/v1/label/__name__/values", nil)
		return strings.Split(strings.Trim(strings.TrimPrefix(body, `{"status":"success","data":`), "[]}"), ",")
	}
	waitFor := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := names()
			var quoted []string
			for _, w := range want {
				quoted = append(quoted, `"`+w+`"`)
			}
			if slices.Equal(got, quoted) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("series names %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("in_x", "in_y")

	// The compactor's output is live: its inputs are hidden at once (sources subset).
	updates <- xy
	waitFor("in_xy")

	// Without the output, marked inputs stay readable; with it, they are covered.
	x.State, y.State = schemas.StateMarked, schemas.StateMarked
	updates <- schemas.BlockRecord{Version: xy.Version, ULID: xy.ULID, MinTime: xy.MinTime, MaxTime: xy.MaxTime, State: schemas.StateDeleted}
	updates <- x
	updates <- y
	waitFor("in_x", "in_y")
	xy2 := upload("in_xy2", func(m *block.Meta) {
		m.Compaction.Level = 2
		m.Compaction.Sources = []ulid.ULID{x.ULID, y.ULID}
	})
	updates <- xy2
	waitFor("in_xy2")

	// Deleted blocks leave the cache directory.
	for _, r := range []schemas.BlockRecord{x, y} {
		if _, err := os.Stat(filepath.Join(dataDir, "blocks", r.ULID.String(), "index")); err != nil {
			t.Fatalf("index of %s not cached: %v", r.ULID, err)
		}
		r.State = schemas.StateDeleted
		updates <- r
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range []schemas.BlockRecord{x, y, xy} {
		for {
			if _, err := os.Stat(filepath.Join(dataDir, "blocks", r.ULID.String())); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cache of deleted block %s still exists", r.ULID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("in_xy2")
}

func TestIndexReusedAcrossRestarts(t *testing.T) {
	f := newFixture(t)
	dataDir := t.TempDir()
	query := url.Values{"query": {`sum(counter)`}, "time": {"10000"}}

	h := start(t, f.bkt, blocktest.Static(f.recs, nil), dataDir)
	h.waitReady(t)
	code, first := h.get(t, "/api/v1/query", query)
	if code != 200 {
		t.Fatalf("%d %s", code, first)
	}
	h.stop()
	downloads := f.bkt.Calls("Get", "")
	if downloads != 1 {
		t.Fatalf("%d downloads for a query on one block", downloads)
	}

	h2 := start(t, f.bkt, blocktest.Static(f.recs, nil), dataDir)
	h2.waitReady(t)
	if code, again := h2.get(t, "/api/v1/query", query); code != 200 || again != first {
		t.Fatalf("after restart: %d %s, want %s", code, again, first)
	}
	if n := f.bkt.Calls("Get", ""); n != downloads {
		t.Fatalf("the index was downloaded again after a restart (%d gets)", n-downloads)
	}
	if n := f.bkt.Calls("Iter", ""); n != 0 {
		t.Fatalf("the bucket was listed %d times", n)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cat := blocktest.Static(nil, nil)
	for _, opts := range []Options{
		{Catalogue: cat, DataDir: t.TempDir()},
		{Bucket: fs, DataDir: t.TempDir()},
		{Bucket: fs, Catalogue: cat},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("New(%+v): want an error", opts)
		}
	}
}
