package storeapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/dedup"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

const (
	defaultInfoInterval = 5 * time.Second // the Thanos Querier's endpoint refresh
	defaultInfoTimeout  = 5 * time.Second
	// responseBatchSize is what Thanos Queriers >= v0.41 ask for.
	responseBatchSize = 64
)

// QueryOptions are the per-query settings a Thanos Querier takes from request parameters
// (dedup and replicaLabels[], partial_response).
type QueryOptions struct {
	// ReplicaLabels, when set, are stripped from every series, and series that differ only
	// in them are merged as replicas (penalty deduplication). Empty means no dedup.
	ReplicaLabels []string
	// PartialResponseStrategy WARN turns a failing endpoint into a warning; ABORT fails
	// the query.
	PartialResponseStrategy storepb.PartialResponseStrategy
	// MaxResolutionWindow is the coarsest downsampled data (ms) the endpoints may answer
	// with (max_source_resolution); 0 asks for raw data only. Each Select lowers it as
	// SelectResolution says.
	MaxResolutionWindow int64
}

// SelectResolution is the coarsest resolution (ms) one Select may read when the query
// allows maxResolution, as the Thanos Querier decides it: a function that needs two
// samples in its range (rate, irate, increase, delta, idelta, deriv, predict_linear,
// holt_winters, double_exponential_smoothing) gets at most half its range, so that
// rate(x[5m]) reads raw data, rate(x[1h]) 5m data and rate(x[2h]) 1h data.
func SelectResolution(maxResolution int64, hints *storage.SelectHints) int64 {
	if maxResolution <= 0 {
		return 0
	}
	if hints == nil {
		return maxResolution
	}
	switch hints.Func {
	case "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "holt_winters", "double_exponential_smoothing":
		return min(maxResolution, hints.Range/2)
	}
	return maxResolution
}

// QueryableOptions configure a Queryable.
type QueryableOptions struct {
	QueryOptions               // defaults for Querier
	InfoInterval time.Duration // between endpoint refreshes by Run; default 5s
	InfoTimeout  time.Duration // per Info call; default 5s
	Logger       zerolog.Logger
}

// Queryable fans queries out to StoreAPI endpoints, as the Thanos Querier does, and serves
// the merged (and deduplicated) result as a Prometheus storage.Queryable.
type Queryable struct {
	endpoints []*Endpoint
	opts      QueryableOptions
}

// NewQueryable returns a Queryable over endpoints. Endpoints are queried only after a
// successful refresh: call Run (or Refresh) before querying.
func NewQueryable(endpoints []*Endpoint, opts QueryableOptions) *Queryable {
	if opts.InfoInterval <= 0 {
		opts.InfoInterval = defaultInfoInterval
	}
	if opts.InfoTimeout <= 0 {
		opts.InfoTimeout = defaultInfoTimeout
	}
	return &Queryable{endpoints: endpoints, opts: opts}
}

// Run refreshes the endpoints at once and then every InfoInterval until ctx is done.
func (q *Queryable) Run(ctx context.Context) {
	t := time.NewTicker(q.opts.InfoInterval)
	defer t.Stop()
	for {
		q.Refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh calls Info on every endpoint in parallel and records the answers.
func (q *Queryable) Refresh(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range q.endpoints {
		wg.Go(func() {
			_, was := e.queryInfo()
			e.Refresh(ctx, q.opts.InfoTimeout)
			st := e.Status()
			switch {
			case was && !st.Healthy:
				q.opts.Logger.Warn().Str("endpoint", st.Name).Str("err", *st.LastError).Msg("storeapi endpoint unhealthy")
			case !was && st.Healthy:
				q.opts.Logger.Info().Str("endpoint", st.Name).Str("type", st.ComponentType).Msg("storeapi endpoint healthy")
			}
		})
	}
	wg.Wait()
}

// Stores lists the endpoints' states, sorted by name, for /api/v1/stores.
func (q *Queryable) Stores() []EndpointStatus {
	out := make([]EndpointStatus, 0, len(q.endpoints))
	for _, e := range q.endpoints {
		out = append(out, e.Status())
	}
	sortStatuses(out)
	return out
}

// Options are the default query options.
func (q *Queryable) Options() QueryOptions { return q.opts.QueryOptions }

// Querier returns a querier with the default query options.
func (q *Queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return &querier{endpoints: q.endpoints, mint: mint, maxt: maxt, opts: q.opts.QueryOptions}, nil
}

// With returns a view of q with other query options, for one request.
func (q *Queryable) With(o QueryOptions) storage.Queryable {
	return storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		return &querier{endpoints: q.endpoints, mint: mint, maxt: maxt, opts: o}, nil
	})
}

type querier struct {
	endpoints  []*Endpoint
	mint, maxt int64
	opts       QueryOptions
}

func (qr *querier) Close() error { return nil }

// fanOut calls call on every healthy endpoint that may have data for [mint, maxt] and ms,
// in parallel. With strategy WARN a failing endpoint becomes a warning; with ABORT the
// first failure cancels the other calls and is returned.
func fanOut[T any](ctx context.Context, qr *querier, mint, maxt int64, ms []*labels.Matcher,
	call func(ctx context.Context, c *Client, info RemoteInfo) (T, error),
) ([]T, annotations.Annotations, error) {
	type target struct {
		c    *Client
		info RemoteInfo
	}
	var targets []target
	for _, e := range qr.endpoints {
		if info, ok := e.queryInfo(); ok && info.matches(mint, maxt, ms) {
			targets = append(targets, target{c: e.client, info: info})
		}
	}
	results := make([]T, len(targets))
	errs := make([]error, len(targets))
	g, gctx := errgroup.WithContext(ctx)
	for i, t := range targets {
		g.Go(func() error {
			r, err := call(gctx, t.c, t.info)
			if err != nil {
				err = fmt.Errorf("endpoint %s: %w", t.c.Addr(), err)
				if qr.opts.PartialResponseStrategy == storepb.PartialResponseStrategy_ABORT {
					return err
				}
				errs[i] = err
				return nil
			}
			results[i] = r
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	var warns annotations.Annotations
	out := results[:0]
	for i, err := range errs {
		if err != nil {
			warns.Add(err)
			continue
		}
		out = append(out, results[i])
	}
	return out, warns, nil
}

// fetchedSeries is a series as received: labels and wire chunks.
type fetchedSeries struct {
	lset   labels.Labels
	chunks []*storepb.AggrChunk
}

type fetched struct {
	series   []fetchedSeries
	warnings []string
}

func (qr *querier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	pms, err := MatchersToProto(ms)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	req := &storepb.SeriesRequest{
		MinTime:                 qr.mint,
		MaxTime:                 qr.maxt,
		Matchers:                pms,
		PartialResponseStrategy: qr.opts.PartialResponseStrategy,
		WithoutReplicaLabels:    qr.opts.ReplicaLabels,
		ResponseBatchSize:       responseBatchSize,
	}
	var fn string
	if hints != nil {
		req.MinTime, req.MaxTime = hints.Start, hints.End
		req.SkipChunks = hints.Func == "series"
		req.Limit = int64(hints.Limit)
		req.QueryHints = queryHints(hints)
		fn = hints.Func
	}
	// As the Thanos Querier: the function around the selector names the aggregates that
	// downsampled chunks must carry; stores ignore them for raw chunks.
	aggrs := aggrchunk.AggrsForFunc(fn)
	req.Aggregates = aggrsToProto(aggrs)
	req.MaxResolutionWindow = SelectResolution(qr.opts.MaxResolutionWindow, hints)

	results, warns, err := fanOut(ctx, qr, req.GetMinTime(), req.GetMaxTime(), ms, func(ctx context.Context, c *Client, info RemoteInfo) (fetched, error) {
		return fetchSeries(ctx, c, info, req)
	})
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	var all []fetchedSeries
	for _, r := range results {
		all = append(all, r.series...)
		for _, w := range r.warnings {
			warns.Add(errors.New(w))
		}
	}
	slices.SortStableFunc(all, func(a, b fetchedSeries) int { return labels.Compare(a.lset, b.lset) })

	series := make([]storage.Series, 0, len(all))
	for i := 0; i < len(all); {
		s := all[i]
		j := i + 1
		for ; j < len(all) && labels.Equal(all[j].lset, s.lset); j++ {
			s.chunks = append(s.chunks, all[j].chunks...)
		}
		i = j
		metas, err := decodeChunks(s.chunks)
		if err != nil {
			return storage.ErrSeriesSet(fmt.Errorf("series %s: %w", s.lset, err))
		}
		series = append(series, &remoteSeries{
			lset:    s.lset,
			chunks:  metas,
			mint:    req.GetMinTime(),
			maxt:    req.GetMaxTime(),
			dedup:   len(qr.opts.ReplicaLabels) > 0,
			counter: dedup.IsCounterFunc(fn),
			aggrs:   aggrs,
		})
		if req.GetLimit() > 0 && int64(len(series)) >= req.GetLimit() {
			break
		}
	}
	return NewSeriesList(series, warns)
}

func queryHints(h *storage.SelectHints) *storepb.QueryHints {
	qh := &storepb.QueryHints{StepMillis: h.Step}
	if h.Func != "" {
		qh.Func = &storepb.Func{Name: h.Func}
	}
	if h.Range > 0 {
		qh.Range = &storepb.Range{Millis: h.Range}
	}
	if h.By || len(h.Grouping) > 0 {
		qh.Grouping = &storepb.Grouping{By: h.By, Labels: h.Grouping}
	}
	return qh
}

// fetchSeries reads one endpoint's Series stream to the end. The Thanos Querier's eager
// strategy does the same: each store's response is buffered, then merged with the others.
func fetchSeries(ctx context.Context, c *Client, info RemoteInfo, req *storepb.SeriesRequest) (fetched, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.store.Series(ctx, req)
	if err != nil {
		return fetched{}, fmt.Errorf("series: %w", err)
	}
	var out fetched
	add := func(s *storepb.Series) {
		out.series = append(out.series, fetchedSeries{lset: LabelsFromProto(s.GetLabels()), chunks: s.GetChunks()})
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fetched{}, fmt.Errorf("series: %w", err)
		}
		switch r := resp.GetResult().(type) {
		case *storepb.SeriesResponse_Series:
			add(r.Series)
		case *storepb.SeriesResponse_Batch:
			for _, s := range r.Batch.GetSeries() {
				add(s)
			}
		case *storepb.SeriesResponse_Warning:
			out.warnings = append(out.warnings, r.Warning)
		}
	}
	// A store that does not strip replica labels itself gets them stripped here.
	if without := req.GetWithoutReplicaLabels(); len(without) > 0 && !info.WithoutReplicaLabels {
		for i := range out.series {
			out.series[i].lset, _ = StripLabels(out.series[i].lset, without)
		}
	}
	return out, nil
}

// decodeChunks sorts wire chunks by time, drops duplicates (several stores or blocks with
// the same data) and decodes them.
func decodeChunks(chks []*storepb.AggrChunk) ([]chunks.Meta, error) {
	chks = dedupChunks(chks)
	metas := make([]chunks.Meta, 0, len(chks))
	for _, c := range chks {
		m, err := ChunkFromProto(c)
		if err != nil {
			return nil, err
		}
		metas = append(metas, m)
	}
	return metas, nil
}

func (qr *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	pms, err := MatchersToProto(ms)
	if err != nil {
		return nil, nil, err
	}
	req := &storepb.LabelNamesRequest{
		PartialResponseStrategy: qr.opts.PartialResponseStrategy,
		Start:                   qr.mint,
		End:                     qr.maxt,
		Matchers:                pms,
		WithoutReplicaLabels:    qr.opts.ReplicaLabels,
		Limit:                   labelLimit(hints),
	}
	results, warns, err := fanOut(ctx, qr, qr.mint, qr.maxt, ms, func(ctx context.Context, c *Client, _ RemoteInfo) (*storepb.LabelNamesResponse, error) {
		return c.store.LabelNames(ctx, req)
	})
	if err != nil {
		return nil, nil, err
	}
	var names []string
	for _, r := range results {
		names = append(names, r.GetNames()...)
		for _, w := range r.GetWarnings() {
			warns.Add(errors.New(w))
		}
	}
	return SortedStrings(names, qr.opts.ReplicaLabels, req.GetLimit()), warns, nil
}

func (qr *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if slices.Contains(qr.opts.ReplicaLabels, name) {
		return nil, nil, nil
	}
	pms, err := MatchersToProto(ms)
	if err != nil {
		return nil, nil, err
	}
	req := &storepb.LabelValuesRequest{
		Label:                   name,
		PartialResponseStrategy: qr.opts.PartialResponseStrategy,
		Start:                   qr.mint,
		End:                     qr.maxt,
		Matchers:                pms,
		WithoutReplicaLabels:    qr.opts.ReplicaLabels,
		Limit:                   labelLimit(hints),
	}
	results, warns, err := fanOut(ctx, qr, qr.mint, qr.maxt, ms, func(ctx context.Context, c *Client, _ RemoteInfo) (*storepb.LabelValuesResponse, error) {
		return c.store.LabelValues(ctx, req)
	})
	if err != nil {
		return nil, nil, err
	}
	var values []string
	for _, r := range results {
		values = append(values, r.GetValues()...)
		for _, w := range r.GetWarnings() {
			warns.Add(errors.New(w))
		}
	}
	return SortedStrings(values, nil, req.GetLimit()), warns, nil
}

func labelLimit(h *storage.LabelHints) int64 {
	if h == nil {
		return 0
	}
	return int64(h.Limit)
}

// NewSeriesList returns a storage.SeriesSet over series, in their order, with warnings.
func NewSeriesList(series []storage.Series, warnings annotations.Annotations) storage.SeriesSet {
	return &seriesList{series: series, i: -1, warnings: warnings}
}

// seriesList is a storage.SeriesSet over a slice.
type seriesList struct {
	series   []storage.Series
	i        int
	warnings annotations.Annotations
}

func (l *seriesList) Next() bool {
	l.i++
	return l.i < len(l.series)
}

func (l *seriesList) At() storage.Series                { return l.series[l.i] }
func (l *seriesList) Err() error                        { return nil }
func (l *seriesList) Warnings() annotations.Annotations { return l.warnings }
