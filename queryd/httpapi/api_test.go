package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/queryd/internal/blocktest"
)

const hour = int64(3600_000)

// openDB writes a block of 6 counters (every 15s) and one native histogram series (every
// minute) over [0, 2h) and opens it read-only.
func openDB(t *testing.T) storage.Queryable {
	t.Helper()
	dir := t.TempDir()
	series := append(blocktest.FloatSeries("counter", 6, 0, 2*hour, 15_000), blocktest.HistogramSeries("hist", 1, 0, 2*hour, 60_000)...)
	blocktest.Create(t, dir, series)
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := tsdb.OpenDBReadOnly(dir, t.TempDir(), promslog.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newEngine(maxSamples int) *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		MaxSamples:               maxSamples,
		Timeout:                  time.Minute,
		LookbackDelta:            5 * time.Minute,
		NoStepSubqueryIntervalFn: func(int64) int64 { return 60_000 },
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
	})
}

func newHandler(t *testing.T, q storage.Queryable, engine *promql.Engine, ready func() bool) http.Handler {
	t.Helper()
	api := New(Options{
		Queryable: q,
		Engine:    engine,
		Ready:     ready,
		BuildInfo: BuildInfo{Version: "1.2.3", Revision: "abc", Branch: "main", BuildUser: "ci", BuildDate: "20260101", GoVersion: "go1.26"},
		Now:       func() time.Time { return time.Unix(120, 0) },
		Logger:    zerolog.Nop(),
	})
	mux := http.NewServeMux()
	api.Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	return mux
}

// call sends params as a query string (GET) or a form body (POST).
func call(t *testing.T, h http.Handler, method, path string, params url.Values) (int, string) {
	t.Helper()
	var req *http.Request
	if method == http.MethodGet {
		req = httptest.NewRequest(method, path+"?"+params.Encode(), nil)
	} else {
		req = httptest.NewRequest(method, path, strings.NewReader(params.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := rec.Result().Header.Get("Content-Type"); rec.Code < 300 && ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	return rec.Code, string(body)
}

func params(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func TestEndpoints(t *testing.T) {
	h := newHandler(t, openDB(t), newEngine(50_000_000), nil)
	const (
		c3    = `{"__name__":"counter","i":"3","job":"job-0"}`
		trunc = `"warnings":["results truncated due to limit"]`
	)
	for _, tc := range []struct {
		name   string
		path   string
		params url.Values
		want   string
	}{
		{"scalar", "/api/v1/query", params("query", "1+1", "time", "100"),
			`{"status":"success","data":{"resultType":"scalar","result":[100,"2"]}}`},
		{"string", "/api/v1/query", params("query", `"a<b"`, "time", "100.5"),
			`{"status":"success","data":{"resultType":"string","result":[100.5,"a\u003cb"]}}`},
		{"vector", "/api/v1/query", params("query", `counter{i="3"}`, "time", "60"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":` + c3 + `,"value":[60,"16"]}]}}`},
		{"vector, default time is now", "/api/v1/query", params("query", `counter{i="3"}`),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":` + c3 + `,"value":[120,"32"]}]}}`},
		{"vector, RFC 3339 time", "/api/v1/query", params("query", `counter{i="3"}`, "time", "1970-01-01T00:01:00.25Z"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":` + c3 + `,"value":[60.250,"16"]}]}}`},
		{"NaN", "/api/v1/query", params("query", `counter{i="2"}`, "time", "15"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"counter","i":"2","job":"job-2"},"value":[15,"NaN"]}]}}`},
		{"+Inf", "/api/v1/query", params("query", `counter{i="2"}`, "time", "30"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"counter","i":"2","job":"job-2"},"value":[30,"+Inf"]}]}}`},
		{"small and large values", "/api/v1/query", params("query", `vector(1e-7) or label_replace(vector(-1e21), "a", "b", "", "")`, "time", "0.001"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[0.001,"1e-07"]},{"metric":{"a":"b"},"value":[0.001,"-1e+21"]}]}}`},
		{"small scalar", "/api/v1/query", params("query", `1e-7`, "time", "1"),
			`{"status":"success","data":{"resultType":"scalar","result":[1,"0.0000001"]}}`},
		{"vector, limit", "/api/v1/query", params("query", `counter{i=~"3|4"}`, "time", "60", "limit", "1"),
			`{"status":"success","data":{"resultType":"vector","result":[{"metric":` + c3 + `,"value":[60,"16"]}]},` + trunc + `}`},
		{"matrix", "/api/v1/query_range", params("query", `counter{i="0"}`, "start", "0", "end", "60", "step", "30"),
			`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"counter","i":"0","job":"job-0"},"values":[[0,"0"],[30,"2"],[60,"4"]]}]}}`},
		{"matrix, duration step, RFC 3339", "/api/v1/query_range", params("query", `counter{i="0"}`, "start", "1970-01-01T00:00:00Z", "end", "1970-01-01T00:01:00Z", "step", "30s"),
			`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"counter","i":"0","job":"job-0"},"values":[[0,"0"],[30,"2"],[60,"4"]]}]}}`},
		{"matrix with infos", "/api/v1/query_range", params("query", `sum by (job) (rate(counter{i=~"[01]"}[1m]))`, "start", "60", "end", "60", "step", "1"),
			`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"job-0"},"values":[[60,"0.06666666666666665"]]},{"metric":{"job":"job-1"},"values":[[60,"0.1333333333333333"]]}]},` +
				`"infos":["PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: \"counter\" (1:20)"]}`},
		{"series", "/api/v1/series", params("match[]", `counter{i=~"[01]"}`),
			`{"status":"success","data":[{"__name__":"counter","i":"0","job":"job-0"},{"__name__":"counter","i":"1","job":"job-1"}]}`},
		{"series, two selectors, range", "/api/v1/series", params("match[]", `counter{i="1"}`, "match[]", `hist`, "start", "0", "end", "3600"),
			`{"status":"success","data":[{"__name__":"counter","i":"1","job":"job-1"},{"__name__":"hist","i":"0"}]}`},
		{"series, out of range", "/api/v1/series", params("match[]", `counter`, "start", "100000"),
			`{"status":"success","data":[]}`},
		{"series, limit", "/api/v1/series", params("match[]", `counter`, "limit", "1"),
			`{"status":"success","data":[{"__name__":"counter","i":"0","job":"job-0"}],` + trunc + `}`},
		{"labels", "/api/v1/labels", nil,
			`{"status":"success","data":["__name__","i","job"]}`},
		{"labels of series", "/api/v1/labels", params("match[]", `hist`, "start", "0", "end", "7200"),
			`{"status":"success","data":["__name__","i"]}`},
		{"labels, limit", "/api/v1/labels", params("limit", "2"),
			`{"status":"success","data":["__name__","i"],` + trunc + `}`},
		{"label values", "/api/v1/label/job/values", nil,
			`{"status":"success","data":["job-0","job-1","job-2"]}`},
		{"label values, escaped name", "/api/v1/label/U__job/values", nil,
			`{"status":"success","data":["job-0","job-1","job-2"]}`},
		{"label values of series", "/api/v1/label/i/values", params("match[]", `counter{job="job-1"}`, "match[]", `hist`),
			`{"status":"success","data":["0","1","4"]}`},
		{"label values, limit", "/api/v1/label/job/values", params("limit", "1"),
			`{"status":"success","data":["job-0"],` + trunc + `}`},
		{"label values, none", "/api/v1/label/nope/values", nil,
			`{"status":"success","data":[]}`},
		{"buildinfo", "/api/v1/status/buildinfo", nil,
			`{"status":"success","data":{"version":"1.2.3","revision":"abc","branch":"main","buildUser":"ci","buildDate":"20260101","goVersion":"go1.26"}}`},
		{"metadata", "/api/v1/metadata", params("metric", "counter"),
			`{"status":"success","data":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			methods := []string{http.MethodGet, http.MethodPost}
			if strings.HasPrefix(tc.path, "/api/v1/label/") || strings.HasSuffix(tc.path, "buildinfo") || strings.HasSuffix(tc.path, "metadata") {
				methods = methods[:1]
			}
			for _, m := range methods {
				code, body := call(t, h, m, tc.path, tc.params)
				if code != http.StatusOK || body != tc.want {
					t.Fatalf("%s: %d %s\nwant 200 %s", m, code, body, tc.want)
				}
			}
		})
	}
}

func TestHistogramResult(t *testing.T) {
	h := newHandler(t, openDB(t), newEngine(50_000_000), nil)
	_, body := call(t, h, http.MethodGet, "/api/v1/query", params("query", "hist", "time", "60"))
	var resp struct {
		Data struct {
			Result []struct {
				Histogram [2]json.RawMessage `json:"histogram"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(resp.Data.Result) != 1 {
		t.Fatalf("got %s", body)
	}
	h0 := resp.Data.Result[0].Histogram
	if string(h0[0]) != "60" || !strings.HasPrefix(string(h0[1]), `{"count":"`) || !strings.Contains(string(h0[1]), `"buckets":[[`) {
		t.Fatalf("histogram sample %s", body)
	}
	_, body = call(t, h, http.MethodGet, "/api/v1/query_range", params("query", "hist", "start", "60", "end", "120", "step", "60"))
	if !strings.Contains(body, `"histograms":[[60,{"count":"`) || strings.Contains(body, `"values"`) {
		t.Fatalf("histogram series %s", body)
	}
}

type apiErrorBody struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

func TestErrors(t *testing.T) {
	db := openDB(t)
	h := newHandler(t, db, newEngine(50_000_000), nil)
	for _, tc := range []struct {
		name      string
		handler   http.Handler
		method    string
		path      string
		params    url.Values
		ctx       func() context.Context
		code      int
		errorType string
		error     string // a prefix of the message
	}{
		{name: "bad PromQL", path: "/api/v1/query", params: params("query", "sum("),
			code: 400, errorType: "bad_data", error: `invalid parameter "query": 1:5: parse error`},
		{name: "bad PromQL, range", path: "/api/v1/query_range", params: params("query", "sum(", "start", "0", "end", "1", "step", "1"),
			code: 400, errorType: "bad_data", error: `invalid parameter "query": `},
		{name: "bad time", path: "/api/v1/query", params: params("query", "1", "time", "abc"),
			code: 400, errorType: "bad_data", error: `invalid parameter "time": invalid time value for 'time': cannot parse "abc" to a valid timestamp`},
		{name: "bad start", path: "/api/v1/query_range", params: params("query", "1", "start", "abc", "end", "1", "step", "1"),
			code: 400, errorType: "bad_data", error: `invalid parameter "start": cannot parse "abc" to a valid timestamp`},
		{name: "no end", path: "/api/v1/query_range", params: params("query", "1", "start", "1", "step", "1"),
			code: 400, errorType: "bad_data", error: `invalid parameter "end": cannot parse "" to a valid timestamp`},
		{name: "end before start", path: "/api/v1/query_range", params: params("query", "1", "start", "10", "end", "9", "step", "1"),
			code: 400, errorType: "bad_data", error: `invalid parameter "end": end timestamp must not be before start time`},
		{name: "zero step", path: "/api/v1/query_range", params: params("query", "1", "start", "0", "end", "1", "step", "0"),
			code: 400, errorType: "bad_data", error: `invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer`},
		{name: "negative step", path: "/api/v1/query_range", params: params("query", "1", "start", "0", "end", "1", "step", "-1s"),
			code: 400, errorType: "bad_data", error: `invalid parameter "step": `},
		{name: "bad step", path: "/api/v1/query_range", params: params("query", "1", "start", "0", "end", "1", "step", "abc"),
			code: 400, errorType: "bad_data", error: `invalid parameter "step": cannot parse "abc" to a valid duration`},
		{name: "too many points", path: "/api/v1/query_range", params: params("query", "1", "start", "0", "end", "11001", "step", "1"),
			code: 400, errorType: "bad_data", error: `exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)`},
		{name: "bad timeout", path: "/api/v1/query", params: params("query", "1", "timeout", "abc"),
			code: 400, errorType: "bad_data", error: `invalid parameter "timeout": cannot parse "abc" to a valid duration`},
		{name: "zero timeout", path: "/api/v1/query", params: params("query", "1", "timeout", "0"),
			code: 400, errorType: "bad_data", error: `invalid parameter "timeout": timeout must be positive, got 0s`},
		{name: "bad limit", path: "/api/v1/query", params: params("query", "1", "limit", "-1"),
			code: 400, errorType: "bad_data", error: `invalid parameter "limit": limit must be non-negative`},
		{name: "bad lookback delta", path: "/api/v1/query", params: params("query", "1", "lookback_delta", "x"),
			code: 400, errorType: "bad_data", error: `error parsing lookback delta duration: `},
		{name: "runtime error", path: "/api/v1/query", params: params("query", "counter / on(job) counter", "time", "60"),
			code: 422, errorType: "execution", error: `found duplicate series for the match group`},
		{name: "too many samples", handler: newHandler(t, db, newEngine(10), nil), path: "/api/v1/query", params: params("query", "counter[1h]", "time", "3600"),
			code: 422, errorType: "execution", error: `query processing would load too many samples into memory`},
		{name: "timeout", path: "/api/v1/query", params: params("query", "counter", "timeout", "0.000000001"),
			code: 503, errorType: "timeout", error: `query timed out`},
		{name: "canceled", path: "/api/v1/query_range", params: params("query", "counter", "start", "0", "end", "60", "step", "1"),
			ctx:  func() context.Context { ctx, cancel := context.WithCancel(context.Background()); cancel(); return ctx },
			code: 499, errorType: "canceled", error: `query was canceled`},
		{name: "not ready", handler: newHandler(t, db, newEngine(10), func() bool { return false }), path: "/api/v1/query", params: params("query", "1"),
			code: 503, errorType: "unavailable", error: `queryd is not ready`},
		{name: "not ready, series", handler: newHandler(t, db, newEngine(10), func() bool { return false }), path: "/api/v1/series", params: params("match[]", "up"),
			code: 503, errorType: "unavailable", error: `queryd is not ready`},
		{name: "series without match", path: "/api/v1/series", params: params("start", "0"),
			code: 400, errorType: "bad_data", error: `no match[] parameter provided`},
		{name: "series, bad match", path: "/api/v1/series", params: params("match[]", "{"),
			code: 400, errorType: "bad_data", error: `invalid parameter "match[]": `},
		{name: "series, empty matchers", path: "/api/v1/series", params: params("match[]", `{foo=""}`),
			code: 400, errorType: "bad_data", error: `invalid parameter "match[]": match[] must contain at least one non-empty matcher`},
		{name: "series, bad end", path: "/api/v1/series", params: params("match[]", "up", "end", "x"),
			code: 400, errorType: "bad_data", error: `invalid parameter "end": invalid time value for 'end': cannot parse "x" to a valid timestamp`},
		{name: "labels, empty matchers", path: "/api/v1/labels", params: params("match[]", `{foo=~".*"}`),
			code: 400, errorType: "bad_data", error: `match[] must contain at least one non-empty matcher`},
		{name: "labels, bad start", path: "/api/v1/labels", params: params("start", "x"),
			code: 400, errorType: "bad_data", error: `invalid parameter "start": invalid time value for 'start'`},
		{name: "label values, bad name", method: http.MethodGet, path: "/api/v1/label/%FF/values",
			code: 400, errorType: "bad_data", error: `invalid label name: `},
		{name: "label values, bad limit", method: http.MethodGet, path: "/api/v1/label/job/values", params: params("limit", "x"),
			code: 400, errorType: "bad_data", error: `invalid parameter "limit": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			handler := cmpOr(tc.handler, h)
			methods := []string{http.MethodGet, http.MethodPost}
			if tc.method != "" {
				methods = []string{tc.method}
			}
			for _, m := range methods {
				req := httptest.NewRequest(m, tc.path+"?"+tc.params.Encode(), nil)
				if m == http.MethodPost {
					req = httptest.NewRequest(m, tc.path, strings.NewReader(tc.params.Encode()))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				if tc.ctx != nil {
					req = req.WithContext(tc.ctx())
				}
				rec := httptest.NewRecorder()
				handler.ServeHTTP(rec, req)
				var got apiErrorBody
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
					t.Fatalf("%s: %d %s: %v", m, rec.Code, rec.Body, err)
				}
				if rec.Code != tc.code || got.Status != "error" || got.ErrorType != tc.errorType || !strings.HasPrefix(got.Error, tc.error) && !strings.Contains(got.Error, tc.error) {
					t.Fatalf("%s: got %d %+v\nwant %d %s %q", m, rec.Code, got, tc.code, tc.errorType, tc.error)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Fatalf("content type %q", ct)
				}
			}
		})
	}
}

func cmpOr(h, def http.Handler) http.Handler {
	if h == nil {
		return def
	}
	return h
}

func TestMethodNotAllowed(t *testing.T) {
	h := newHandler(t, openDB(t), newEngine(10), nil)
	for _, path := range []string{"/api/v1/query", "/api/v1/label/job/values"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, path, nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("DELETE %s: %d", path, rec.Code)
		}
	}
}

func TestErrorClassification(t *testing.T) {
	for _, tc := range []struct {
		err  error
		typ  errorType
		code int
	}{
		{promql.ErrQueryCanceled("x"), errorCanceled, 499},
		{fmt.Errorf("wrapped: %w", context.Canceled), errorCanceled, 499},
		{promql.ErrQueryTimeout("x"), errorTimeout, 503},
		{promql.ErrStorage{Err: errors.New("bucket down")}, errorInternal, 500},
		{errors.New("anything else"), errorExec, 422},
	} {
		got := queryError(tc.err)
		if got.typ != tc.typ || got.typ.status() != tc.code {
			t.Errorf("%v: got %s %d, want %s %d", tc.err, got.typ, got.typ.status(), tc.typ, tc.code)
		}
	}
}

func TestParseTimeAndDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"0", time.Unix(0, 0)},
		{"1435781451.781", time.Unix(1435781451, 781_000_000)},
		{"-1.5", time.Unix(-2, 500_000_000)},
		{"2015-07-01T20:10:51.781Z", time.Unix(1435781451, 781_000_000)},
		{"2015-07-01T22:10:51+02:00", time.Unix(1435781451, 0)},
		{minTimeFormatted, minTime},
		{maxTimeFormatted, maxTime},
	} {
		got, err := parseTime(tc.in)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{"0.5", 500 * time.Millisecond, true},
		{"1m30s", 90 * time.Second, true},
		{"1d", 24 * time.Hour, true},
		{"1e30", 0, false},
		{"NaN", 0, false},
		{"5 minutes", 0, false},
	} {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"plain", `quo"te\`, "tab\tnl\ncr\r", "<&>", "\x01\x1f", "é ü 日本", "\u2028\u2029", "bad\xffutf8"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("%q: got %s, want %s", s, got, want)
		}
	}
}

// TestMaxSourceResolution: query and query_range read max_source_resolution as the Thanos
// Querier does (auto is a fifth of the step of a range query and raw data for an instant
// query; absent is raw data), other endpoints read raw data, and a bad value is bad_data.
func TestMaxSourceResolution(t *testing.T) {
	db := openDB(t)
	var got *ReadOptions
	api := New(Options{
		QueryableFor: func(_ *http.Request, o ReadOptions) (storage.Queryable, error) {
			got = &o
			return db, nil
		},
		Engine: newEngine(50_000_000),
		Logger: zerolog.Nop(),
	})
	mux := http.NewServeMux()
	api.Register(mux, func(_ string, h http.Handler) http.Handler { return h })
	rangeQuery := func(kv ...string) url.Values {
		return params(append([]string{"query", "counter", "start", "0", "end", "7200", "step", "3600"}, kv...)...)
	}

	for _, tc := range []struct {
		name   string
		path   string
		params url.Values
		want   time.Duration
		code   int
	}{
		{"range absent", "/api/v1/query_range", rangeQuery(), 0, 200},
		{"range auto", "/api/v1/query_range", rangeQuery("max_source_resolution", "auto"), 12 * time.Minute, 200},
		{"range 5m", "/api/v1/query_range", rangeQuery("max_source_resolution", "5m"), 5 * time.Minute, 200},
		{"range 1h", "/api/v1/query_range", rangeQuery("max_source_resolution", "1h"), time.Hour, 200},
		{"range seconds", "/api/v1/query_range", rangeQuery("max_source_resolution", "300"), 5 * time.Minute, 200},
		{"range 0s", "/api/v1/query_range", rangeQuery("max_source_resolution", "0s"), 0, 200},
		{"range bad", "/api/v1/query_range", rangeQuery("max_source_resolution", "coarse"), 0, 400},
		{"range negative", "/api/v1/query_range", rangeQuery("max_source_resolution", "-5m"), 0, 400},
		{"instant auto", "/api/v1/query", params("query", "counter", "time", "60", "max_source_resolution", "auto"), 0, 200},
		{"instant 1h", "/api/v1/query", params("query", "counter", "time", "60", "max_source_resolution", "1h"), time.Hour, 200},
		{"instant bad", "/api/v1/query", params("query", "counter", "time", "60", "max_source_resolution", "1x"), 0, 400},
		{"series", "/api/v1/series", params("match[]", "counter", "max_source_resolution", "1h"), 0, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = nil
			code, body := call(t, mux, http.MethodGet, tc.path, tc.params)
			if code != tc.code {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.code, body)
			}
			if code != 200 {
				if !strings.Contains(body, `"errorType":"bad_data"`) || !strings.Contains(body, "max_source_resolution") {
					t.Errorf("body %s", body)
				}
				return
			}
			if got == nil || got.MaxSourceResolution != tc.want {
				t.Errorf("read options %+v, want max source resolution %s", got, tc.want)
			}
		})
	}
}

// TestDynamicLookbackDelta: a query that may read data coarser than 5m looks back an hour
// (1h samples are an hour apart), unless the request sets lookback_delta.
func TestDynamicLookbackDelta(t *testing.T) {
	h := newHandler(t, openDB(t), newEngine(50_000_000), nil)
	// The block's last samples are at 2h - 15s; 30 minutes later.
	at := fmt.Sprint(2*hour/1000 + 1800)
	for _, tc := range []struct {
		kv    []string
		found bool
	}{
		{nil, false},
		{[]string{"max_source_resolution", "5m"}, false},
		{[]string{"max_source_resolution", "1h"}, true},
		{[]string{"max_source_resolution", "1h", "lookback_delta", "1m"}, false},
		{[]string{"max_source_resolution", "0", "lookback_delta", "40m"}, true},
	} {
		code, body := call(t, h, http.MethodGet, "/api/v1/query", params(append([]string{"query", `counter{i="3"}`, "time", at}, tc.kv...)...))
		if code != 200 {
			t.Fatalf("%v: HTTP %d: %s", tc.kv, code, body)
		}
		if found := strings.Contains(body, `"i":"3"`); found != tc.found {
			t.Errorf("%v: found %v, want %v: %s", tc.kv, found, tc.found, body)
		}
	}
}
