// Package httpapi serves the read side of the Prometheus HTTP API (/api/v1/query,
// query_range, series, labels, label/<name>/values, status/buildinfo, metadata) over a
// storage.Queryable, with Prometheus' parameter parsing, JSON shapes, error types and
// status codes, so Grafana and promtool use queryd as they use Prometheus.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/rs/zerolog"
)

// maxPoints bounds the points per series of a range query, as Prometheus does.
const maxPoints = 11000

// BuildInfo is /api/v1/status/buildinfo.
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// ReadOptions are what a request says about the data it reads, beyond its form.
type ReadOptions struct {
	// MaxSourceResolution is the coarsest downsampled data the request may read (Thanos'
	// max_source_resolution); 0 means raw data only.
	MaxSourceResolution time.Duration
}

// Options configure an API.
type Options struct {
	Queryable storage.Queryable
	// QueryableFor, when set, picks the Queryable of one request from its parsed form (as
	// the Thanos Querier reads dedup and partial_response) and its read options; its error
	// is a bad_data answer.
	QueryableFor func(r *http.Request, o ReadOptions) (storage.Queryable, error)
	Engine       *promql.Engine
	// LookbackDelta is the engine's lookback delta (default 5m). A query reading data coarser
	// than it gets a lookback delta of at least an hour, as in Thanos, so that an instant
	// selector still finds a 1h sample.
	LookbackDelta time.Duration
	// Parser parses match[] selectors (default: PromQL's default parser).
	Parser parser.Parser
	// Ready gates the data endpoints: until it is true they answer 503 "unavailable".
	Ready     func() bool
	BuildInfo BuildInfo
	// Now is the default evaluation time (default time.Now).
	Now    func() time.Time
	Logger zerolog.Logger
}

// API is the Prometheus-compatible HTTP API.
type API struct {
	queryable     storage.Queryable
	queryableFor  func(r *http.Request, o ReadOptions) (storage.Queryable, error)
	engine        *promql.Engine
	lookbackDelta time.Duration
	parser        parser.Parser
	ready         func() bool
	buildInfo     BuildInfo
	now           func() time.Time
	log           zerolog.Logger
}

// New returns the API.
func New(opts Options) *API {
	a := &API{
		queryable:     opts.Queryable,
		queryableFor:  opts.QueryableFor,
		engine:        opts.Engine,
		lookbackDelta: opts.LookbackDelta,
		parser:        opts.Parser,
		ready:         opts.Ready,
		buildInfo:     opts.BuildInfo,
		now:           opts.Now,
		log:           opts.Logger,
	}
	if a.parser == nil {
		a.parser = parser.NewParser(parser.Options{})
	}
	if a.ready == nil {
		a.ready = func() bool { return true }
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.lookbackDelta <= 0 {
		a.lookbackDelta = defaultLookbackDelta
	}
	if a.buildInfo.GoVersion == "" {
		a.buildInfo.GoVersion = runtime.Version()
	}
	return a
}

// Register adds the endpoints to mux. wrap decorates each handler (metrics); name is
// the route as Prometheus labels it ("/api/v1/label/:name/values").
func (a *API) Register(mux *http.ServeMux, wrap func(name string, h http.Handler) http.Handler) {
	routes := []struct {
		name, pattern string
		methods       []string
		f             apiFunc
		gated         bool
	}{
		{"/api/v1/query", "/api/v1/query", []string{http.MethodGet, http.MethodPost}, a.query, true},
		{"/api/v1/query_range", "/api/v1/query_range", []string{http.MethodGet, http.MethodPost}, a.queryRange, true},
		{"/api/v1/series", "/api/v1/series", []string{http.MethodGet, http.MethodPost}, a.series, true},
		{"/api/v1/labels", "/api/v1/labels", []string{http.MethodGet, http.MethodPost}, a.labelNames, true},
		{"/api/v1/label/:name/values", "/api/v1/label/{name}/values", []string{http.MethodGet}, a.labelValues, true},
		{"/api/v1/status/buildinfo", "/api/v1/status/buildinfo", []string{http.MethodGet}, a.serveBuildInfo, false},
		{"/api/v1/metadata", "/api/v1/metadata", []string{http.MethodGet}, a.metadata, false},
	}
	for _, rt := range routes {
		h := wrap(rt.name, a.handler(rt.f, rt.gated))
		for _, m := range rt.methods {
			mux.Handle(m+" "+rt.pattern, h)
		}
	}
}

// result is what an endpoint returns; finalize (closing a query) runs after the response
// is written, since the result may point into the query's memory.
type result struct {
	data     any
	err      *apiError
	warnings annotations.Annotations
	finalize func()
}

type apiFunc func(r *http.Request) result

func (a *API) handler(f apiFunc, gated bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gated && !a.ready() {
			a.respondError(w, &apiError{errorUnavailable, errors.New("queryd is not ready: the block catalogue is still loading")})
			return
		}
		if err := r.ParseForm(); err != nil {
			a.respondError(w, &apiError{errorBadData, fmt.Errorf("error parsing form values: %w", err)})
			return
		}
		res := f(r)
		if res.finalize != nil {
			defer res.finalize()
		}
		if res.err != nil {
			a.respondError(w, res.err)
			return
		}
		a.respond(w, res.data, res.warnings, r.FormValue("query"))
	})
}

// queryableOf returns the Queryable that answers r.
func (a *API) queryableOf(r *http.Request, o ReadOptions) (storage.Queryable, *apiError) {
	if a.queryableFor == nil {
		return a.queryable, nil
	}
	q, err := a.queryableFor(r, o)
	if err != nil {
		return nil, &apiError{errorBadData, err}
	}
	return q, nil
}

// queryData is the data of /api/v1/query and /api/v1/query_range.
type queryData struct {
	resultType parser.ValueType
	result     parser.Value
}

func (a *API) respond(w http.ResponseWriter, data any, warnings annotations.Annotations, query string) {
	b := []byte(`{"status":"success","data":`)
	var err error
	if qd, ok := data.(queryData); ok {
		b = append(b, `{"resultType":`...)
		b = appendString(b, string(qd.resultType))
		b = append(b, `,"result":`...)
		b, err = appendValue(b, qd.result)
		b = append(b, '}')
	} else {
		var enc []byte
		enc, err = json.Marshal(data)
		b = append(b, enc...)
	}
	if err != nil {
		a.log.Error().Err(err).Msg("encode response")
		a.respondError(w, &apiError{errorInternal, fmt.Errorf("encode response: %w", err)})
		return
	}
	warns, infos := warnings.AsStrings(query, 10, 10)
	b = appendStrings(b, "warnings", warns)
	b = appendStrings(b, "infos", infos)
	b = append(b, '}')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(b); err != nil {
		a.log.Debug().Err(err).Msg("write response")
	}
}

// appendStrings appends `,"key":[...]` unless list is empty (Prometheus omits it).
func appendStrings(b []byte, key string, list []string) []byte {
	if len(list) == 0 {
		return b
	}
	b = append(b, ',')
	b = appendString(b, key)
	b = append(b, ':', '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func (a *API) respondError(w http.ResponseWriter, e *apiError) {
	b, err := json.Marshal(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", string(e.typ), e.err.Error()})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.typ.status())
	if _, err := w.Write(b); err != nil {
		a.log.Debug().Err(err).Msg("write error response")
	}
}

// queryTimeout reads the optional "timeout" parameter.
func queryTimeout(r *http.Request) (time.Duration, *apiError) {
	v := r.FormValue("timeout")
	if v == "" {
		return 0, nil
	}
	d, err := parseDuration(v)
	if err != nil {
		return 0, invalidParam(err, "timeout")
	}
	if d <= 0 {
		return 0, invalidParam(fmt.Errorf("timeout must be positive, got %s", d), "timeout")
	}
	return d, nil
}

// queryOpts reads the optional "lookback_delta" parameter; without it, a query reading
// data coarser than the default lookback delta (and 5m) looks back at least an hour, as
// Thanos' dynamic lookback delta does.
func (a *API) queryOpts(r *http.Request, o ReadOptions) (promql.QueryOpts, *apiError) {
	var lookback time.Duration // the engine's
	if o.MaxSourceResolution > max(a.lookbackDelta, defaultLookbackDelta) {
		lookback = max(a.lookbackDelta, coarseLookbackDelta)
	}
	if v := r.FormValue("lookback_delta"); v != "" {
		d, err := parseDuration(v)
		if err != nil {
			return nil, &apiError{errorBadData, fmt.Errorf("error parsing lookback delta duration: %w", err)}
		}
		if d > 0 {
			lookback = d
		}
	}
	return promql.NewPrometheusQueryOpts(false, lookback, nil), nil
}

func (a *API) query(r *http.Request) result {
	limit, aerr := limitParam(r)
	if aerr != nil {
		return result{err: aerr}
	}
	ts, err := timeParam(r, "time", a.now())
	if err != nil {
		return result{err: invalidParam(err, "time")}
	}
	ctx := r.Context()
	timeout, aerr := queryTimeout(r)
	if aerr != nil {
		return result{err: aerr}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// As in Thanos, "auto" means raw data for instant queries.
	ro, aerr := readOptions(r, 0)
	if aerr != nil {
		return result{err: aerr}
	}
	opts, aerr := a.queryOpts(r, ro)
	if aerr != nil {
		return result{err: aerr}
	}
	queryable, aerr := a.queryableOf(r, ro)
	if aerr != nil {
		return result{err: aerr}
	}
	qry, err := a.engine.NewInstantQuery(ctx, queryable, opts, r.FormValue("query"), ts)
	if err != nil {
		return result{err: constructionError(err)}
	}
	return execute(ctx, qry, limit)
}

func (a *API) queryRange(r *http.Request) result {
	limit, aerr := limitParam(r)
	if aerr != nil {
		return result{err: aerr}
	}
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		return result{err: invalidParam(err, "start")}
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		return result{err: invalidParam(err, "end")}
	}
	if end.Before(start) {
		return result{err: invalidParam(errors.New("end timestamp must not be before start time"), "end")}
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		return result{err: invalidParam(err, "step")}
	}
	if step <= 0 {
		return result{err: invalidParam(errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"), "step")}
	}
	if end.Sub(start)/step > maxPoints {
		return result{err: &apiError{errorBadData, errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")}}
	}
	ctx := r.Context()
	timeout, aerr := queryTimeout(r)
	if aerr != nil {
		return result{err: aerr}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	ro, aerr := readOptions(r, step/autoResolutionDivisor)
	if aerr != nil {
		return result{err: aerr}
	}
	opts, aerr := a.queryOpts(r, ro)
	if aerr != nil {
		return result{err: aerr}
	}
	queryable, aerr := a.queryableOf(r, ro)
	if aerr != nil {
		return result{err: aerr}
	}
	qry, err := a.engine.NewRangeQuery(ctx, queryable, opts, r.FormValue("query"), start, end, step)
	if err != nil {
		return result{err: constructionError(err)}
	}
	return execute(ctx, qry, limit)
}

// execute runs qry; the result is valid until the query is closed, after the response.
func execute(ctx context.Context, qry promql.Query, limit int) result {
	res := qry.Exec(ctx)
	if res.Err != nil {
		qry.Close()
		return result{err: queryError(res.Err), warnings: res.Warnings}
	}
	warnings := res.Warnings
	if limit > 0 && truncate(res, limit) {
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return result{
		data:     queryData{resultType: res.Value.Type(), result: res.Value},
		warnings: warnings,
		finalize: qry.Close,
	}
}

// truncate keeps the first limit series of a vector or matrix result.
func truncate(res *promql.Result, limit int) bool {
	switch v := res.Value.(type) {
	case promql.Matrix:
		if len(v) > limit {
			res.Value = v[:limit]
			return true
		}
	case promql.Vector:
		if len(v) > limit {
			res.Value = v[:limit]
			return true
		}
	}
	return false
}

func (a *API) series(r *http.Request) result {
	if len(r.Form["match[]"]) == 0 {
		return result{err: &apiError{errorBadData, errors.New("no match[] parameter provided")}}
	}
	limit, aerr := limitParam(r)
	if aerr != nil {
		return result{err: aerr}
	}
	start, err := timeParam(r, "start", minTime)
	if err != nil {
		return result{err: invalidParam(err, "start")}
	}
	end, err := timeParam(r, "end", maxTime)
	if err != nil {
		return result{err: invalidParam(err, "end")}
	}
	sets, err := a.matcherSets(r.Form["match[]"])
	if err != nil {
		return result{err: invalidParam(err, "match[]")}
	}
	queryable, aerr := a.queryableOf(r, ReadOptions{})
	if aerr != nil {
		return result{err: aerr}
	}
	q, err := queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return result{err: queryError(err)}
	}
	closer := func() { q.Close() }
	ctx := r.Context()
	hints := &storage.SelectHints{
		Start: timestamp.FromTime(start),
		End:   timestamp.FromTime(end),
		Func:  "series", // labels only, no chunks
		Limit: hintLimit(limit),
	}
	var set storage.SeriesSet
	if len(sets) > 1 {
		var all []storage.SeriesSet
		for _, ms := range sets {
			all = append(all, q.Select(ctx, true, hints, ms...))
		}
		set = storage.NewMergeSeriesSet(all, 0, storage.ChainedSeriesMerge)
	} else {
		set = q.Select(ctx, false, hints, sets[0]...)
	}
	metrics := []labels.Labels{}
	warnings := set.Warnings()
	for set.Next() {
		if err := ctx.Err(); err != nil {
			return result{err: queryError(err), warnings: warnings, finalize: closer}
		}
		metrics = append(metrics, set.At().Labels())
		if limit > 0 && len(metrics) > limit {
			metrics = metrics[:limit]
			warnings = warnings.Add(errors.New("results truncated due to limit"))
			return result{data: metrics, warnings: warnings, finalize: closer}
		}
	}
	if err := set.Err(); err != nil {
		return result{err: queryError(err), warnings: warnings, finalize: closer}
	}
	return result{data: metrics, warnings: warnings, finalize: closer}
}

// labelArgs are the parameters /labels and /label/<name>/values share.
func (a *API) labelArgs(r *http.Request) (limit int, q storage.Querier, sets [][]*labels.Matcher, aerr *apiError) {
	limit, aerr = limitParam(r)
	if aerr != nil {
		return 0, nil, nil, aerr
	}
	start, err := timeParam(r, "start", minTime)
	if err != nil {
		return 0, nil, nil, invalidParam(err, "start")
	}
	end, err := timeParam(r, "end", maxTime)
	if err != nil {
		return 0, nil, nil, invalidParam(err, "end")
	}
	sets, err = a.matcherSets(r.Form["match[]"])
	if err != nil {
		return 0, nil, nil, &apiError{errorBadData, err}
	}
	queryable, aerr := a.queryableOf(r, ReadOptions{})
	if aerr != nil {
		return 0, nil, nil, aerr
	}
	q, err = queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return 0, nil, nil, queryError(err)
	}
	return limit, q, sets, nil
}

func (a *API) labelNames(r *http.Request) result {
	limit, q, sets, aerr := a.labelArgs(r)
	if aerr != nil {
		return result{err: aerr}
	}
	closer := func() { q.Close() }
	hints := &storage.LabelHints{Limit: hintLimit(limit)}
	names, warnings, err := collect(sets, func(ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelNames(r.Context(), hints, ms...)
	})
	if err != nil {
		return result{err: &apiError{errorExec, err}, warnings: warnings, finalize: closer}
	}
	if limit > 0 && len(names) > limit {
		names = names[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return result{data: names, warnings: warnings, finalize: closer}
}

func (a *API) labelValues(r *http.Request) result {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return result{err: &apiError{errorBadData, fmt.Errorf("invalid label name: %q", name)}}
	}
	limit, q, sets, aerr := a.labelArgs(r)
	if aerr != nil {
		return result{err: aerr}
	}
	closer := func() { q.Close() }
	hints := &storage.LabelHints{Limit: hintLimit(limit)}
	values, warnings, err := collect(sets, func(ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelValues(r.Context(), name, hints, ms...)
	})
	if err != nil {
		return result{err: &apiError{errorExec, err}, warnings: warnings, finalize: closer}
	}
	if limit > 0 && len(values) > limit {
		values = values[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return result{data: values, warnings: warnings, finalize: closer}
}

// collect runs get once without matchers, or once per matcher set, and returns the
// sorted union (never nil, so it encodes as []).
func collect(sets [][]*labels.Matcher, get func([]*labels.Matcher) ([]string, annotations.Annotations, error)) ([]string, annotations.Annotations, error) {
	if len(sets) <= 1 {
		var ms []*labels.Matcher
		if len(sets) == 1 {
			ms = sets[0]
		}
		out, ws, err := get(ms)
		if out == nil {
			out = []string{}
		}
		slices.Sort(out)
		return out, ws, err
	}
	var warnings annotations.Annotations
	union := map[string]struct{}{}
	for _, ms := range sets {
		vals, ws, err := get(ms)
		warnings.Merge(ws)
		if err != nil {
			return nil, warnings, err
		}
		for _, v := range vals {
			union[v] = struct{}{}
		}
	}
	out := make([]string, 0, len(union))
	for v := range union {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, warnings, nil
}

func (a *API) serveBuildInfo(*http.Request) result {
	return result{data: a.buildInfo}
}

// metadata answers as Prometheus does when it knows no metric metadata: blocks carry
// none. Grafana's metrics browser asks for it.
func (a *API) metadata(*http.Request) result {
	return result{data: map[string]any{}}
}
