// Package queryd is blockflow's query daemon: it learns which blocks exist from the
// catalogue (never by listing the bucket), reads them from the bucket through a bounded
// local index cache and range reads, and answers PromQL over them with the Prometheus
// HTTP API. It serves its blocks over the Thanos StoreAPI, and, as a Thanos Querier, reads
// other StoreAPI endpoints (sidecars for the newest data) along with its own blocks,
// deduplicating HA replicas. A query reads raw data unless its max_source_resolution
// allows downsampled (5m, 1h) data, which it then reads through the aggregate that fits
// each function, as Thanos does.
package queryd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/blockquery"
	"github.com/blockflow/blockflow/queryd/blockset"
	"github.com/blockflow/blockflow/queryd/bucketblock"
	"github.com/blockflow/blockflow/queryd/httpapi"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// Defaults, as Prometheus and Thanos set them.
const (
	DefaultIndexCacheSize = 10 << 30
	DefaultMaxSamples     = 50_000_000
	DefaultQueryTimeout   = 2 * time.Minute
	DefaultLookbackDelta  = 5 * time.Minute
	// defaultSubqueryStep is the step of a subquery without one: Prometheus uses the
	// global evaluation interval, 1m by default.
	defaultSubqueryStep = time.Minute
)

// Options configure a Server.
type Options struct {
	Bucket    objstore.Bucket
	Catalogue blockset.Catalogue
	// DataDir holds the index cache, under blocks/<ulid>/index.
	DataDir string
	// IndexCacheSize bounds the bytes of cached index files (default 10 GiB).
	IndexCacheSize int64
	// MaxSamples, QueryTimeout and LookbackDelta configure the PromQL engine.
	MaxSamples    int
	QueryTimeout  time.Duration
	LookbackDelta time.Duration
	BuildInfo     httpapi.BuildInfo
	// Endpoints are StoreAPI endpoints (host:port) that PromQL reads along with the own
	// blocks: sidecars for the data Prometheus still holds, other stores. Each is queried
	// while its last Info call (every 5s) succeeded, when its time range and label sets
	// may hold data for the query.
	Endpoints []string
	// ReplicaLabels are the labels that tell HA replicas apart: series that differ only in
	// them are one series, merged from its replicas (unless a request says dedup=false).
	ReplicaLabels []string
	// PartialResponse is what a failing endpoint does to a query by default: WARN (the
	// zero value) answers from the others with a warning, ABORT fails the query. A request
	// chooses with partial_response=true|false.
	PartialResponse storepb.PartialResponseStrategy
	Logger          zerolog.Logger
	// Registerer and Gatherer hold queryd's metrics and serve /metrics; when nil, a
	// registry of the Server's own is used.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
}

// Server is queryd.
type Server struct {
	cat       blockset.Catalogue
	cache     *bucketblock.Cache
	set       *blockset.Set
	queryable *blockquery.Queryable[*bucketblock.Block]
	// remote fans out to the endpoints; nil without any.
	remote    *storeapi.Queryable
	endpoints []*storeapi.Endpoint
	queryOpts storeapi.QueryOptions // defaults of the per-request options
	store     *storeapi.Server
	handler   http.Handler
	log       zerolog.Logger
}

// New builds a Server; Run starts following the catalogue.
func New(opts Options) (*Server, error) {
	switch {
	case opts.Bucket == nil:
		return nil, errors.New("queryd: no bucket")
	case opts.Catalogue == nil:
		return nil, errors.New("queryd: no catalogue")
	case opts.DataDir == "":
		return nil, errors.New("queryd: no data directory")
	}
	if opts.IndexCacheSize <= 0 {
		opts.IndexCacheSize = DefaultIndexCacheSize
	}
	if opts.MaxSamples <= 0 {
		opts.MaxSamples = DefaultMaxSamples
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	if opts.LookbackDelta <= 0 {
		opts.LookbackDelta = DefaultLookbackDelta
	}
	if opts.Registerer == nil && opts.Gatherer == nil {
		reg := prometheus.NewRegistry()
		opts.Registerer, opts.Gatherer = reg, reg
	}
	log := opts.Logger.With().Str(logging.FieldComponent, "queryd").Logger()

	cache, err := bucketblock.NewCache(opts.Bucket, bucketblock.CacheOptions{
		Dir:        filepath.Join(opts.DataDir, "blocks"),
		MaxBytes:   opts.IndexCacheSize,
		Logger:     log,
		Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("queryd: %w", err)
	}
	s := &Server{
		cat:   opts.Catalogue,
		cache: cache,
		set:   blockset.New(cache, log, opts.Registerer),
		log:   log,
	}
	s.queryable = blockquery.NewQueryable(func(mint, maxt int64) []*bucketblock.Block {
		return s.set.Snapshot().For(mint, maxt, schemas.ResRaw)
	})
	s.queryOpts = storeapi.QueryOptions{ReplicaLabels: opts.ReplicaLabels, PartialResponseStrategy: opts.PartialResponse}
	if err := s.dialEndpoints(opts.Endpoints); err != nil {
		return nil, err
	}
	storeOpts := []storeapi.ServerOption{storeapi.WithLogger(opts.Logger.With().Str(logging.FieldComponent, "storeapi").Logger())}
	if opts.Registerer != nil {
		storeOpts = append(storeOpts, storeapi.WithRegisterer(opts.Registerer))
	}
	s.store = storeapi.NewServer(storeSource{s}, storeOpts...)

	engine := promql.NewEngine(promql.EngineOpts{
		Logger:        slog.New(zerolog.NewSlogHandler(opts.Logger.With().Str(logging.FieldComponent, "promql").Logger())),
		Reg:           opts.Registerer,
		MaxSamples:    opts.MaxSamples,
		Timeout:       opts.QueryTimeout,
		LookbackDelta: opts.LookbackDelta,
		NoStepSubqueryIntervalFn: func(int64) int64 {
			return defaultSubqueryStep.Milliseconds()
		},
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
	api := httpapi.New(httpapi.Options{
		Queryable: s.global(s.queryOpts),
		QueryableFor: func(r *http.Request, ro httpapi.ReadOptions) (storage.Queryable, error) {
			o, err := requestOptions(r, s.queryOpts)
			if err != nil {
				return nil, err
			}
			o.MaxResolutionWindow = ro.MaxSourceResolution.Milliseconds()
			return s.global(o), nil
		},
		Engine:        engine,
		LookbackDelta: opts.LookbackDelta,
		Ready:         s.set.Ready,
		BuildInfo:     opts.BuildInfo,
		Logger:        log,
	})
	s.handler = newMux(api, s.set.Ready, opts.Registerer, opts.Gatherer, s.serveStores)
	return s, nil
}

// dialEndpoints prepares the connections to the StoreAPI endpoints (made lazily).
func (s *Server) dialEndpoints(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	for _, addr := range addrs {
		e, err := storeapi.NewEndpoint(addr)
		if err != nil {
			s.closeEndpoints()
			return fmt.Errorf("queryd: endpoint %s: %w", addr, err)
		}
		s.endpoints = append(s.endpoints, e)
	}
	s.remote = storeapi.NewQueryable(s.endpoints, storeapi.QueryableOptions{
		QueryOptions: s.queryOpts,
		Logger:       s.log,
	})
	return nil
}

func (s *Server) closeEndpoints() error {
	var errs []error
	for _, e := range s.endpoints {
		errs = append(errs, e.Close())
	}
	return errors.Join(errs...)
}

// global is the Queryable of PromQL: own blocks and endpoints, with the options o.
func (s *Server) global(o storeapi.QueryOptions) storage.Queryable {
	return globalQueryable{local: s.local(o.MaxResolutionWindow), remote: s.remote, opts: o}
}

// Run follows the catalogue, and checks the endpoints every 5s, until ctx ends. The
// Server is ready once the catalogue snapshot is loaded.
func (s *Server) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.remote != nil {
		wg.Go(func() { s.remote.Run(ctx) })
	}
	s.log.Info().Msg("following the catalogue")
	return s.set.Run(ctx, s.cat)
}

// Close releases the index cache and the endpoint connections. Call it after Run has
// returned.
func (s *Server) Close() error {
	return errors.Join(s.cache.Close(), s.closeEndpoints())
}

// RegisterStoreAPI registers the StoreAPI (thanos.Store and thanos.info.Info) over the
// own blocks on g; Info fails until the Server is ready. Make g with
// storeapi.NewGRPCServer, as Thanos Queriers expect its keepalive and size settings.
func (s *Server) RegisterStoreAPI(g *grpc.Server) { s.store.Register(g) }

// Stores lists the StoreAPI endpoints with their state, as /api/v1/stores shows them.
func (s *Server) Stores() []storeapi.EndpointStatus {
	if s.remote == nil {
		return nil
	}
	return s.remote.Stores()
}

// Handler serves the Prometheus HTTP API, /api/v1/stores, /-/ready, /-/healthy and
// /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready reports whether the catalogue snapshot is loaded.
func (s *Server) Ready() bool { return s.set.Ready() }

// WaitReady blocks until the Server is ready or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error { return s.set.WaitReady(ctx) }

// Queryable reads raw blocks of the current block set, external labels attached, as
// samples (storage.Querier) or chunks (storage.ChunkQuerier).
func (s *Server) Queryable() interface {
	storage.Queryable
	storage.ChunkQueryable
} {
	return s.queryable
}

// Blocks returns the queryable blocks now, with their labels, resolutions and time
// ranges; each block is a tsdb.BlockReader.
func (s *Server) Blocks() *blockset.Snapshot { return s.set.Snapshot() }

func newMux(api *httpapi.API, ready func() bool, reg prometheus.Registerer, gat prometheus.Gatherer, stores http.HandlerFunc) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests by handler and status code.",
	}, []string{"handler", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to answer HTTP requests, by handler.",
		Buckets: []float64{0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"handler"})
	if reg != nil {
		reg.MustRegister(requests, duration)
	}
	wrap := func(name string, h http.Handler) http.Handler {
		labels := prometheus.Labels{"handler": name}
		return promhttp.InstrumentHandlerDuration(duration.MustCurryWith(labels),
			promhttp.InstrumentHandlerCounter(requests.MustCurryWith(labels), h))
	}

	mux := http.NewServeMux()
	api.Register(mux, wrap)
	mux.Handle("GET /api/v1/stores", wrap("/api/v1/stores", stores))
	mux.Handle("GET /-/healthy", wrap("/-/healthy", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "queryd is Healthy.")
	})))
	mux.Handle("GET /-/ready", wrap("/-/ready", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "queryd is not ready: the block catalogue is still loading.", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "queryd is Ready.")
	})))
	if gat != nil {
		mux.Handle("GET /metrics", wrap("/metrics", promhttp.HandlerFor(gat, promhttp.HandlerOpts{})))
	}
	return mux
}
