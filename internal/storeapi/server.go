package storeapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/schemas/thanos/info/infopb"
	"github.com/blockflow/blockflow/schemas/thanos/store/labelpb"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// Source is the data a StoreAPI server serves: queryd's bucket blocks, the sidecar's
// Prometheus.
type Source interface {
	// Info describes the data. A non-nil error means not ready: the Info RPC then fails with
	// codes.Unavailable, and Thanos Queriers do not query the endpoint.
	Info(ctx context.Context) (Info, error)
	// ChunkQuerier returns the series in [mint, maxt] with their external labels attached,
	// sorted when Select is asked to sort, and honouring matchers on external labels
	// (WithExternalLabels does both).
	ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error)
}

// ResolutionSource is a Source that also holds downsampled data, as a Thanos store
// gateway does. The server reads it for Series requests whose max_resolution_window is
// above zero, and fills the requested aggregates from its downsampled chunks.
type ResolutionSource interface {
	Source
	// ChunkQuerierFor is ChunkQuerier over data as coarse as maxResolution (ms): per external
	// label set, the coarsest resolution not above it, with the gaps it leaves filled from
	// finer resolutions. Downsampled chunks are 0xFF chunks (aggrchunk), handed out whole.
	ChunkQuerierFor(mint, maxt, maxResolution int64) (storage.ChunkQuerier, error)
}

// Info describes the data of a StoreAPI endpoint.
type Info struct {
	// ComponentType is the Thanos component type: "store", "sidecar", "receive", "rule",
	// "query" or "debug". Empty means "store".
	ComponentType string
	// LabelSets are the external label sets of the data; Queriers skip an endpoint whose
	// label sets contradict a query's matchers.
	LabelSets []labels.Labels
	// MinTime and MaxTime bound the data (ms, inclusive). With no data, MinTime =
	// math.MaxInt64 and MaxTime = math.MinInt64, so that Queriers never select the endpoint.
	MinTime, MaxTime int64
	// TSDBInfos are the time ranges per external label set.
	TSDBInfos []TSDBInfo
}

// TSDBInfo is the time range of the data of one external label set.
type TSDBInfo struct {
	Labels           labels.Labels
	MinTime, MaxTime int64
}

// Server serves a Source as thanos.Store and thanos.info.Info.
type Server struct {
	src     Source
	log     zerolog.Logger
	metrics *serverMetrics
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithLogger sets the logger for failed requests (default: none).
func WithLogger(log zerolog.Logger) ServerOption {
	return func(s *Server) { s.log = log }
}

// WithRegisterer registers the server's metrics on reg.
func WithRegisterer(reg prometheus.Registerer) ServerOption {
	return func(s *Server) { s.metrics.register(reg) }
}

// NewServer returns a server for src; Register puts it on a gRPC server.
func NewServer(src Source, opts ...ServerOption) *Server {
	s := &Server{src: src, log: zerolog.Nop(), metrics: newServerMetrics()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Register registers thanos.Store (with the legacy Store.Info) and thanos.info.Info on g.
func (s *Server) Register(g *grpc.Server) {
	storepb.RegisterStoreServer(g, storeService{s: s})
	infopb.RegisterInfoServer(g, infoService{s: s})
}

type serverMetrics struct {
	seriesSent   prometheus.Counter
	chunksSent   prometheus.Counter
	seriesTiming *prometheus.HistogramVec
}

func newServerMetrics() *serverMetrics {
	return &serverMetrics{
		seriesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_storeapi_series_sent_total",
			Help: "Series sent in StoreAPI Series responses.",
		}),
		chunksSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_storeapi_chunks_sent_total",
			Help: "Chunks sent in StoreAPI Series responses.",
		}),
		seriesTiming: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                        "blockflow_storeapi_series_request_duration_seconds",
			Help:                        "Duration of StoreAPI Series requests by gRPC status code.",
			Buckets:                     prometheus.DefBuckets,
			NativeHistogramBucketFactor: 1.1,
		}, []string{"code"}),
	}
}

func (m *serverMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.seriesSent, m.chunksSent, m.seriesTiming)
}

// grpcError keeps a gRPC status error as it is and gives any other error the code c
// (or the context's code when the request was cancelled or timed out).
func grpcError(c codes.Code, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		c = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		c = codes.DeadlineExceeded
	}
	return status.Error(c, err.Error())
}

func warningStrings(a annotations.Annotations) []string {
	out := make([]string, 0, len(a))
	for _, err := range a.AsErrors() {
		out = append(out, err.Error())
	}
	sort.Strings(out)
	return out
}

// storeService is thanos.Store. It is a type of its own because thanos.Store and
// thanos.info.Info both have a method Info.
type storeService struct {
	storepb.UnimplementedStoreServer
	s *Server
}

func (ss storeService) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	start := time.Now()
	err := ss.s.series(req, srv)
	ss.s.metrics.seriesTiming.WithLabelValues(status.Code(err).String()).Observe(time.Since(start).Seconds())
	if err != nil {
		ss.s.log.Debug().Err(err).Int64("min_time", req.GetMinTime()).Int64("max_time", req.GetMaxTime()).Msg("series request failed")
	}
	return err
}

func (s *Server) series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	if req.GetMinTime() > req.GetMaxTime() {
		return status.Errorf(codes.InvalidArgument, "min_time %d after max_time %d", req.GetMinTime(), req.GetMaxTime())
	}
	ms, err := MatchersFromProto(req.GetMatchers())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if len(ms) == 0 {
		return status.Error(codes.InvalidArgument, "no matchers")
	}
	q, err := s.seriesQuerier(req)
	if err != nil {
		return grpcError(codes.Unavailable, fmt.Errorf("open querier: %w", err))
	}
	defer q.Close()

	without := req.GetWithoutReplicaLabels()
	hints := selectHints(req)
	if len(without) == 0 {
		// With labels to strip, series may merge, so a source-side limit could cut too early.
		hints.Limit = int(req.GetLimit())
	}
	set := q.Select(srv.Context(), true, hints, ms...)
	w := &seriesWriter{srv: srv, batchSize: int(req.GetResponseBatchSize()), limit: req.GetLimit(), metrics: s.metrics}

	if len(without) == 0 {
		err = writeInOrder(w, set, req)
	} else {
		err = writeStripped(w, set, req, without)
	}
	if err != nil {
		return err
	}
	if err := set.Err(); err != nil {
		return grpcError(codes.Internal, fmt.Errorf("select series: %w", err))
	}
	if err := w.flush(); err != nil {
		return err
	}
	for _, warn := range warningStrings(set.Warnings()) {
		if err := srv.Send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Warning{Warning: warn}}); err != nil {
			return err
		}
	}
	return nil
}

// seriesQuerier opens the source for req: downsampled data too when the request allows it
// and the source has some.
func (s *Server) seriesQuerier(req *storepb.SeriesRequest) (storage.ChunkQuerier, error) {
	if w := req.GetMaxResolutionWindow(); w > 0 {
		if rs, ok := s.src.(ResolutionSource); ok {
			return rs.ChunkQuerierFor(req.GetMinTime(), req.GetMaxTime(), w)
		}
	}
	return s.src.ChunkQuerier(req.GetMinTime(), req.GetMaxTime())
}

// writeInOrder streams the series of set, already in order.
func writeInOrder(w *seriesWriter, set storage.ChunkSeriesSet, req *storepb.SeriesRequest) error {
	for set.Next() {
		chks, err := seriesChunks(set.At(), req)
		if err != nil {
			return grpcError(codes.Internal, err)
		}
		more, err := w.add(set.At().Labels(), chks)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// writeStripped strips the labels without from the series of set, which changes their
// order: it buffers them all, sorts them if needed, then streams them.
func writeStripped(w *seriesWriter, set storage.ChunkSeriesSet, req *storepb.SeriesRequest, without []string) error {
	var buf []bufferedSeries
	var stripped bool
	for set.Next() {
		chks, err := seriesChunks(set.At(), req)
		if err != nil {
			return grpcError(codes.Internal, err)
		}
		lset, ok := StripLabels(set.At().Labels(), without)
		stripped = stripped || ok
		buf = append(buf, bufferedSeries{lset: lset, chunks: chks})
	}
	if stripped {
		slices.SortStableFunc(buf, func(a, b bufferedSeries) int { return labels.Compare(a.lset, b.lset) })
	}
	for _, bs := range buf {
		more, err := w.add(bs.lset, bs.chunks)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// selectHints passes the request's time range and query hints to the source.
// max_resolution_window chose the querier; aggregates apply when chunks are converted.
func selectHints(req *storepb.SeriesRequest) *storage.SelectHints {
	h := &storage.SelectHints{Start: req.GetMinTime(), End: req.GetMaxTime()}
	if qh := req.GetQueryHints(); qh != nil {
		h.Step = qh.GetStepMillis()
		h.Func = qh.GetFunc().GetName()
		h.Range = qh.GetRange().GetMillis()
		h.By = qh.GetGrouping().GetBy()
		h.Grouping = qh.GetGrouping().GetLabels()
	}
	if req.GetSkipChunks() {
		h.Func = "series" // Prometheus' hint for "labels only"
	}
	return h
}

type bufferedSeries struct {
	lset   labels.Labels
	chunks []*storepb.AggrChunk
}

// seriesChunks converts the chunks of s that overlap the requested range, or none when the
// request skips chunks.
func seriesChunks(s storage.ChunkSeries, req *storepb.SeriesRequest) ([]*storepb.AggrChunk, error) {
	if req.GetSkipChunks() {
		return nil, nil
	}
	var out []*storepb.AggrChunk
	it := s.Iterator(nil)
	for it.Next() {
		m := it.At()
		if m.MaxTime < req.GetMinTime() || m.MinTime > req.GetMaxTime() {
			continue
		}
		c, err := ChunkToProto(m, req.GetAggregates())
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", s.Labels(), err)
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("series %s: read chunks: %w", s.Labels(), err)
	}
	return out, nil
}

// StripLabels removes the names from lset and reports whether any was present.
func StripLabels(lset labels.Labels, names []string) (labels.Labels, bool) {
	present := false
	for _, n := range names {
		if lset.Has(n) {
			present = true
			break
		}
	}
	if !present {
		return lset, false
	}
	b := labels.NewScratchBuilder(lset.Len())
	lset.Range(func(l labels.Label) {
		if !slices.Contains(names, l.Name) {
			b.Add(l.Name, l.Value)
		}
	})
	return b.Labels(), true
}

// seriesWriter sends series in order, each once: a series equal to the previous one is
// merged into it, and a series' chunks are sorted by time without duplicates. It sends batch frames only when the client asked for batches larger
// than one, since Queriers before v0.41 do not know them.
type seriesWriter struct {
	srv       storepb.Store_SeriesServer
	batchSize int
	limit     int64
	metrics   *serverMetrics

	pending     *storepb.Series
	pendingLset labels.Labels
	count       int64
	batch       []*storepb.Series
}

// add adds a series and reports false when the series limit is reached: the series was
// not taken and no more will be.
func (w *seriesWriter) add(lset labels.Labels, chks []*storepb.AggrChunk) (bool, error) {
	if w.pending != nil && labels.Equal(lset, w.pendingLset) {
		w.pending.Chunks = append(w.pending.Chunks, chks...)
		return true, nil
	}
	if w.limit > 0 && w.count >= w.limit {
		return false, nil
	}
	if err := w.emitPending(); err != nil {
		return false, err
	}
	w.pending = &storepb.Series{Labels: LabelsToProto(lset), Chunks: chks}
	w.pendingLset = lset
	w.count++
	return true, nil
}

func (w *seriesWriter) emitPending() error {
	if w.pending == nil {
		return nil
	}
	s := w.pending
	if len(s.Chunks) > 1 {
		s.Chunks = dedupChunks(s.Chunks)
	}
	w.pending = nil
	w.metrics.seriesSent.Inc()
	w.metrics.chunksSent.Add(float64(len(s.Chunks)))

	if w.batchSize <= 1 {
		return w.send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Series{Series: s}})
	}
	w.batch = append(w.batch, s)
	if len(w.batch) >= w.batchSize {
		return w.sendBatch()
	}
	return nil
}

func (w *seriesWriter) sendBatch() error {
	if len(w.batch) == 0 {
		return nil
	}
	err := w.send(&storepb.SeriesResponse{Result: &storepb.SeriesResponse_Batch{Batch: &storepb.SeriesBatch{Series: w.batch}}})
	w.batch = nil
	return err
}

func (w *seriesWriter) flush() error {
	if err := w.emitPending(); err != nil {
		return err
	}
	return w.sendBatch()
}

func (w *seriesWriter) send(r *storepb.SeriesResponse) error {
	if err := w.srv.Send(r); err != nil {
		return grpcError(codes.Unavailable, fmt.Errorf("send series: %w", err))
	}
	return nil
}

// dedupChunks sorts chunks by time and drops chunks identical to one already kept (same
// range and hash), as when two blocks or sources hold the same data.
func dedupChunks(chks []*storepb.AggrChunk) []*storepb.AggrChunk {
	slices.SortStableFunc(chks, func(a, b *storepb.AggrChunk) int {
		if a.GetMinTime() != b.GetMinTime() {
			return cmp.Compare(a.GetMinTime(), b.GetMinTime())
		}
		return cmp.Compare(a.GetMaxTime(), b.GetMaxTime())
	})
	out := chks[:0]
	for _, c := range chks {
		dup := false
		for i := len(out) - 1; i >= 0 && out[i].GetMinTime() == c.GetMinTime(); i-- {
			if sameChunk(out[i], c) {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// sameChunk compares the time ranges and every wire chunk (raw and aggregates) by encoding
// and hash.
func sameChunk(a, b *storepb.AggrChunk) bool {
	if a.GetMinTime() != b.GetMinTime() || a.GetMaxTime() != b.GetMaxTime() || !sameWireChunk(a.GetRaw(), b.GetRaw()) {
		return false
	}
	for agg := range aggrchunk.Aggr(aggrchunk.NumAggrs) {
		if !sameWireChunk(*aggrField(a, agg), *aggrField(b, agg)) {
			return false
		}
	}
	return true
}

func sameWireChunk(a, b *storepb.Chunk) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetType() == b.GetType() && chunkHash(a) == chunkHash(b)
}

// chunkHash is the chunk's hash, computed when the sender left it out (as the Thanos
// Querier does).
func chunkHash(c *storepb.Chunk) uint64 {
	if h := c.GetHash(); h != 0 {
		return h
	}
	return xxhash.Sum64(c.GetData())
}

func (ss storeService) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	ms, err := MatchersFromProto(req.GetMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	q, err := ss.s.src.ChunkQuerier(req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, grpcError(codes.Unavailable, fmt.Errorf("open querier: %w", err))
	}
	defer q.Close()
	names, warns, err := q.LabelNames(ctx, &storage.LabelHints{}, ms...)
	if err != nil {
		return nil, grpcError(codes.Internal, fmt.Errorf("label names: %w", err))
	}
	names = SortedStrings(names, req.GetWithoutReplicaLabels(), req.GetLimit())
	return &storepb.LabelNamesResponse{Names: names, Warnings: warningStrings(warns)}, nil
}

func (ss storeService) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	if req.GetLabel() == "" {
		return nil, status.Error(codes.InvalidArgument, "no label name")
	}
	if slices.Contains(req.GetWithoutReplicaLabels(), req.GetLabel()) {
		return &storepb.LabelValuesResponse{}, nil
	}
	ms, err := MatchersFromProto(req.GetMatchers())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	q, err := ss.s.src.ChunkQuerier(req.GetStart(), req.GetEnd())
	if err != nil {
		return nil, grpcError(codes.Unavailable, fmt.Errorf("open querier: %w", err))
	}
	defer q.Close()
	values, warns, err := q.LabelValues(ctx, req.GetLabel(), &storage.LabelHints{}, ms...)
	if err != nil {
		return nil, grpcError(codes.Internal, fmt.Errorf("label values of %q: %w", req.GetLabel(), err))
	}
	values = SortedStrings(values, nil, req.GetLimit())
	return &storepb.LabelValuesResponse{Values: values, Warnings: warningStrings(warns)}, nil
}

// SortedStrings returns ss sorted, without duplicates and without the names in exclude,
// cut to limit when limit > 0. The result is a copy: querier strings may not outlive it.
func SortedStrings(ss, exclude []string, limit int64) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if !slices.Contains(exclude, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if limit > 0 && int64(len(out)) > limit {
		out = out[:limit]
	}
	return out
}

// Info is the legacy thanos.Store/Info, for Queriers older than v0.24.
func (ss storeService) Info(ctx context.Context, _ *storepb.InfoRequest) (*storepb.InfoResponse, error) {
	info, err := ss.s.src.Info(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "not ready: %v", err)
	}
	sets := sortedLabelSets(info.LabelSets)
	resp := &storepb.InfoResponse{
		MinTime:   info.MinTime,
		MaxTime:   info.MaxTime,
		StoreType: storeTypes[componentType(info.ComponentType)], // UNKNOWN if absent
	}
	for _, ls := range sets {
		resp.LabelSets = append(resp.LabelSets, &labelpb.LabelSet{Labels: LabelsToProto(ls)})
	}
	if len(sets) == 1 {
		resp.Labels = LabelsToProto(sets[0])
	}
	return resp, nil
}

// storeTypes maps component types to the legacy Store.Info store types.
var storeTypes = map[string]storepb.StoreType{
	"query":   storepb.StoreType_QUERY,
	"rule":    storepb.StoreType_RULE,
	"sidecar": storepb.StoreType_SIDECAR,
	"store":   storepb.StoreType_STORE,
	"receive": storepb.StoreType_RECEIVE,
	"debug":   storepb.StoreType_DEBUG,
}

func componentType(c string) string {
	if c == "" {
		return "store"
	}
	return c
}

// sortedLabelSets returns the non-empty label sets sorted and without duplicates.
func sortedLabelSets(sets []labels.Labels) []labels.Labels {
	out := make([]labels.Labels, 0, len(sets))
	for _, ls := range sets {
		if !ls.IsEmpty() {
			out = append(out, ls)
		}
	}
	slices.SortFunc(out, labels.Compare)
	return slices.CompactFunc(out, labels.Equal)
}

// infoService is thanos.info.Info.
type infoService struct {
	infopb.UnimplementedInfoServer
	s *Server
}

func (is infoService) Info(ctx context.Context, _ *infopb.InfoRequest) (*infopb.InfoResponse, error) {
	info, err := is.s.src.Info(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "not ready: %v", err)
	}
	resp := &infopb.InfoResponse{
		ComponentType: componentType(info.ComponentType),
		Store: &infopb.StoreInfo{
			MinTime:                      info.MinTime,
			MaxTime:                      info.MaxTime,
			SupportsWithoutReplicaLabels: true,
		},
	}
	for _, ls := range sortedLabelSets(info.LabelSets) {
		resp.LabelSets = append(resp.LabelSets, &labelpb.ZLabelSet{Labels: LabelsToProto(ls)})
	}
	for _, ti := range info.TSDBInfos {
		resp.Store.TsdbInfos = append(resp.Store.TsdbInfos, &infopb.TSDBInfo{
			Labels:  &labelpb.ZLabelSet{Labels: LabelsToProto(ti.Labels)},
			MinTime: ti.MinTime,
			MaxTime: ti.MaxTime,
		})
	}
	return resp, nil
}
