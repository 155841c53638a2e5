package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/ops"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/producers/sidecar"
	"github.com/blockflow/blockflow/queryd"
	"github.com/blockflow/blockflow/queryd/httpapi"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// queryFlags are queryd's own settings, shared by `queryd` and `dev`.
type queryFlags struct {
	indexCacheSize  int64
	timeout         time.Duration
	maxSamples      int
	lookbackDelta   time.Duration
	endpoints       stringsFlag
	replicaLabels   stringsFlag
	partialResponse bool
}

func (q *queryFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&q.indexCacheSize, "index-cache-size", queryd.DefaultIndexCacheSize, "bytes of block indexes cached under --data-dir")
	fs.DurationVar(&q.timeout, "query.timeout", queryd.DefaultQueryTimeout, "maximum time a query may take")
	fs.IntVar(&q.maxSamples, "query.max-samples", queryd.DefaultMaxSamples, "maximum samples a query may load into memory")
	fs.DurationVar(&q.lookbackDelta, "query.lookback-delta", queryd.DefaultLookbackDelta, "how far back an instant vector selector looks")
	fs.Var(&q.endpoints, "endpoint", "StoreAPI endpoint HOST:PORT queried along with the own blocks, e.g. a sidecar (repeatable)")
	fs.Var(&q.replicaLabels, "query.replica-label", "label telling HA replicas apart: series differing only in it are deduplicated (repeatable)")
	fs.BoolVar(&q.partialResponse, "query.partial-response", true, "answer with a warning when an endpoint fails (else fail the query); per request: partial_response")
}

func (q *queryFlags) server(bkt objstore.Bucket, cat *bus.Catalogue, dataDir string, reg *prometheus.Registry, log zerolog.Logger) (*queryd.Server, error) {
	return queryd.New(queryd.Options{
		Bucket:          bkt,
		Catalogue:       cat,
		DataDir:         dataDir,
		IndexCacheSize:  q.indexCacheSize,
		MaxSamples:      q.maxSamples,
		QueryTimeout:    q.timeout,
		LookbackDelta:   q.lookbackDelta,
		Endpoints:       q.endpoints,
		ReplicaLabels:   q.replicaLabels,
		PartialResponse: partialResponseStrategy(q.partialResponse),
		BuildInfo:       httpapi.BuildInfo{Version: buildVersion()},
		Logger:          log,
		Registerer:      reg,
		Gatherer:        reg,
	})
}

func partialResponseStrategy(enabled bool) storepb.PartialResponseStrategy {
	if enabled {
		return storepb.PartialResponseStrategy_WARN
	}
	return storepb.PartialResponseStrategy_ABORT
}

// storeAPILoop binds addr and returns a loop that serves the StoreAPI registered by
// register until ctx ends, or nil when addr is empty (no StoreAPI).
func storeAPILoop(addr string, register func(*grpc.Server), log zerolog.Logger) (func(context.Context) error, error) {
	if addr == "" {
		return nil, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("--grpc-address: %v", err)
	}
	g := storeapi.NewGRPCServer()
	register(g)
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- g.Serve(lis) }()
		log.Info().Str("address", lis.Addr().String()).Msg("serving the StoreAPI (gRPC)")
		select {
		case err := <-errc:
			return fmt.Errorf("grpc server: %w", err)
		case <-ctx.Done():
		}
		// Let running Series calls finish, for a while.
		stopped := make(chan struct{})
		go func() {
			g.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			g.Stop()
		}
		return nil
	}, nil
}

func queryReady(q *queryd.Server) func() error {
	return func() error {
		if !q.Ready() {
			return fmt.Errorf("the block catalogue is still loading")
		}
		return nil
	}
}

func runQueryd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("queryd", stderr)
	var lf logFlags
	var nf natsFlags
	var of objstoreFlags
	var qf queryFlags
	lf.register(fs)
	nf.register(fs)
	of.register(fs)
	qf.register(fs)
	dataDir := fs.String("data-dir", "./data/queryd", "index cache directory")
	httpAddr := fs.String("http-address", "0.0.0.0:10902", "listen address for the Prometheus HTTP API, /metrics and probes")
	grpcAddr := fs.String("grpc-address", "0.0.0.0:10901", "listen address for the Thanos StoreAPI (gRPC) over the own blocks; empty: none")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := nf.config("blockflow-queryd")
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr, "queryd")
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	bkt, err := of.bucket(ctx, log)
	if err != nil {
		return err
	}
	bkt = objstore.Instrument(bkt, reg)
	defer bkt.Close()
	cfg.Registerer = reg
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	q, err := qf.server(bkt, b.Catalogue(), *dataDir, reg, log)
	if err != nil {
		return usageError{err.Error()}
	}
	defer q.Close()
	grpcLoop, err := storeAPILoop(*grpcAddr, q.RegisterStoreAPI, log)
	if err != nil {
		return err
	}
	loops := []func(context.Context) error{q.Run}
	if grpcLoop != nil {
		loops = append(loops, grpcLoop)
	}
	srv := &ops.Server{Addr: *httpAddr, Registry: reg, Ready: queryReady(q), API: q.Handler(), Log: log}
	return serve(ctx, srv, loops...)
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	var lf logFlags
	var of objstoreFlags
	var qf queryFlags
	var labels stringsFlag
	var sf stageFlags
	lf.register(fs)
	of.register(fs)
	qf.register(fs)
	sf.registerPlan(fs)
	sf.registerRetention(fs)
	demo := fs.Bool("demo", false, "write synthetic history (and keep it growing) into <data-dir>/demo-tsdb and ship it")
	demoSpan := fs.Duration("demo.span", synth.DefaultDemoSpan, "how much history --demo writes")
	tsdbPath := fs.String("tsdb.path", "", "Prometheus TSDB directory to ship (default with --demo: <data-dir>/demo-tsdb)")
	dataDir := fs.String("data-dir", "./data", "where NATS, the filesystem bucket and caches live")
	httpAddr := fs.String("http-address", "127.0.0.1:10902", "listen address for the Prometheus HTTP API, /metrics and probes")
	grpcAddr := fs.String("grpc-address", "127.0.0.1:10901", "listen address for the Thanos StoreAPI (gRPC) over the shipped blocks; empty: none")
	natsListen := fs.String("nats.listen", "127.0.0.1:0", "client address of the embedded NATS server (port 0: any free port)")
	fs.Var(&labels, "label", "external label k=v of the shipped blocks (repeatable; default cluster=dev, or cluster=demo with --demo)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tsdbPath == "" && !*demo {
		return usagef("--tsdb.path or --demo is required")
	}
	for _, stage := range []string{"plan", "retention"} {
		if err := sf.validate(stage); err != nil {
			return err
		}
	}
	lbls, err := ship.ParseLabels(labels)
	if err != nil {
		return usagef("--label: %v", err)
	}
	if len(lbls) == 0 {
		lbls = map[string]string{"cluster": "dev"}
		if *demo {
			lbls["cluster"] = "demo"
		}
	}
	natsHost, natsPort, err := splitHostPort(*natsListen)
	if err != nil {
		return usagef("--nats.listen: %v", err)
	}
	log, err := lf.logger(stderr, "dev")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return usagef("--data-dir: %v", err)
	}
	if *demo && *tsdbPath == "" {
		*tsdbPath = filepath.Join(*dataDir, "demo-tsdb")
	}
	if *demo {
		metas, err := synth.WriteDemoBlocks(ctx, *tsdbPath, time.Now(), *demoSpan)
		if err != nil {
			return err
		}
		log.Info().Int("blocks", len(metas)).Str("dir", *tsdbPath).Msg("demo history written")
	}

	reg := ops.NewRegistry()
	bkt, err := devBucket(ctx, of, filepath.Join(*dataDir, "bucket"), log)
	if err != nil {
		return err
	}
	bkt = objstore.Instrument(bkt, reg)
	defer bkt.Close()

	nsrv, err := bus.StartEmbedded(bus.EmbeddedOptions{
		StoreDir: filepath.Join(*dataDir, "nats"), Host: natsHost, Port: natsPort, Log: log,
	})
	if err != nil {
		return err
	}
	defer nsrv.Shutdown()
	b, err := bus.Connect(ctx, bus.Config{URL: nsrv.ClientURL(), Name: "blockflow-dev", Registerer: reg}, log)
	if err != nil {
		return err
	}
	defer b.Close()

	sc, err := sidecar.New(sidecar.Options{
		TSDBPath: *tsdbPath, DataDir: filepath.Join(*dataDir, "sidecar"), Labels: lbls,
		Staging: b.Staging(), Publisher: b, Logger: log, Registerer: reg,
	})
	if err != nil {
		return usageError{err.Error()}
	}
	q, err := qf.server(bkt, b.Catalogue(), filepath.Join(*dataDir, "queryd"), reg, log)
	if err != nil {
		return err
	}
	defer q.Close()
	grpcLoop, err := storeAPILoop(*grpcAddr, q.RegisterStoreAPI, log)
	if err != nil {
		return err
	}
	srv := &ops.Server{Addr: *httpAddr, Registry: reg, Ready: queryReady(q), API: q.Handler(), Log: log}
	loops := []func(context.Context) error{
		sc.Run,
		q.Run,
		func(ctx context.Context) error { return devBanner(ctx, q, srv, nsrv.ClientURL(), *grpcAddr, stdout) },
	}
	if *demo {
		loops = append(loops, func(ctx context.Context) error { return demoLive(ctx, *tsdbPath, log) })
	}
	if grpcLoop != nil {
		loops = append(loops, grpcLoop)
	}
	// Every worker stage, each with one slot, against the same bus and bucket.
	sf.slots, sf.ackWait = 1, bus.DefaultAckWait
	for _, stage := range stages {
		loop, err := sf.stageLoop(stage, stageDeps{bus: b, bucket: bkt, dataDir: filepath.Join(*dataDir, "work"), reg: reg,
			log: log.With().Str(logging.FieldStage, stage).Logger()})
		if err != nil {
			return err
		}
		loops = append(loops, loop)
	}
	return serve(ctx, srv, loops...)
}

// devBucket is the bucket of `dev`: the objstore flags when given, else a local directory.
func devBucket(ctx context.Context, of objstoreFlags, dir string, log zerolog.Logger) (objstore.Bucket, error) {
	if of.file != "" || of.inline != "" {
		return of.bucket(ctx, log)
	}
	return objstore.NewFilesystem(dir)
}

// demoLive keeps the demo's history growing: every minute it writes the samples since the
// last block as a new small block, as if Prometheus had just cut it, so the pipeline keeps
// flowing and an instant query at "now" has data.
func demoLive(ctx context.Context, dir string, log zerolog.Logger) error {
	from := time.Time{}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		meta, err := synth.WriteDemoRecent(ctx, dir, from, time.Now())
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn().Err(err).Msg("demo: writing recent samples")
		default:
			from = time.UnixMilli(meta.MaxTime)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// devBanner tells a newcomer where to look once queryd is ready.
func devBanner(ctx context.Context, q *queryd.Server, srv *ops.Server, natsURL, grpcAddr string, w io.Writer) error {
	if err := q.WaitReady(ctx); err != nil {
		return nil
	}
	u := srv.URL()
	fmt.Fprintf(w, `
blockflow dev is running.
  Prometheus HTTP API  %[1]s   (add it to Grafana as a Prometheus data source)
  metrics              %[1]s/metrics
  NATS JetStream       %[2]s
  Thanos StoreAPI      %[3]s
Try:
  curl -s '%[1]s/api/v1/query' --data-urlencode 'query=sum by (status) (request_count_total)'
  curl -s '%[1]s/api/v1/labels'
  promtool query instant %[1]s 'sum by (status) (rate(request_count_total[5m]))'

`, u, natsURL, storeAPIAddr(grpcAddr))
	return nil
}

// storeAPIAddr tells where the StoreAPI is, for the banner.
func storeAPIAddr(addr string) string {
	if addr == "" {
		return "not served (--grpc-address is empty)"
	}
	return addr + "   (thanos query --endpoint=" + addr + ")"
}
