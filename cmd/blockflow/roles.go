package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/sync/errgroup"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/ops"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/producers/backfill"
	"github.com/blockflow/blockflow/producers/bucketimport"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/producers/sidecar"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "blockflow %s\n", buildVersion())
	return nil
}

// serve runs the ops HTTP server and the role's loops until ctx ends or one of them fails.
func serve(ctx context.Context, srv *ops.Server, loops ...func(context.Context) error) error {
	if err := srv.Listen(); err != nil {
		return usageError{err.Error()}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx) })
	for _, loop := range loops {
		g.Go(func() error { return loop(ctx) })
	}
	return g.Wait()
}

// busReady is a readiness check that pings NATS.
func busReady(b *bus.Bus) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.Ping(ctx)
	}
}

func runSidecar(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("sidecar", stderr)
	var lf logFlags
	var nf natsFlags
	var labels stringsFlag
	lf.register(fs)
	nf.register(fs)
	tsdbPath := fs.String("tsdb.path", "", "Prometheus's --storage.tsdb.path (required)")
	promURL := fs.String("prometheus.url", "", "Prometheus URL: its external labels (/api/v1/status/config) and the data the StoreAPI serves (remote read)")
	site := fs.String("site", "", "site name in subjects and staging (default: derived from the external labels)")
	dataDir := fs.String("data-dir", "./data/sidecar", "the sidecar's own directory (same filesystem as --tsdb.path, for hard links)")
	httpAddr := fs.String("http-address", "0.0.0.0:10902", "listen address for /metrics and probes")
	grpcAddr := fs.String("grpc-address", "0.0.0.0:10901", "listen address for the Thanos StoreAPI (gRPC) over Prometheus's data, with --prometheus.url; empty: none")
	interval := fs.Duration("shipper.interval", sidecar.DefaultInterval, "time between TSDB directory scans (new blocks also trigger a scan)")
	fs.Var(&labels, "label", "external label k=v (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *tsdbPath == "" {
		return usagef("--tsdb.path is required")
	}
	lbls, err := ship.ParseLabels(labels)
	if err != nil {
		return usagef("--label: %v", err)
	}
	if len(lbls) == 0 && *promURL == "" {
		return usagef("no external labels: set --label k=v or --prometheus.url with external_labels in Prometheus's global config")
	}
	cfg, err := nf.config("blockflow-sidecar")
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr, "sidecar")
	if err != nil {
		return err
	}
	reg := ops.NewRegistry()
	cfg.Registerer = reg
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	sc, err := sidecar.New(sidecar.Options{
		TSDBPath: *tsdbPath, DataDir: *dataDir, Labels: lbls, PrometheusURL: *promURL, Site: *site,
		Interval: *interval, Staging: b.Staging(), Publisher: b, Logger: log, Registerer: reg,
	})
	if err != nil {
		return usageError{err.Error()}
	}
	loops := []func(context.Context) error{sc.Run}
	if *promURL == "" {
		log.Info().Msg("no --prometheus.url: the StoreAPI is not served")
	} else {
		src, err := sidecar.NewPrometheusSource(sidecar.SourceOptions{PrometheusURL: *promURL, Labels: lbls, Logger: log})
		if err != nil {
			return usageError{err.Error()}
		}
		store := storeapi.NewServer(src, storeapi.WithLogger(log), storeapi.WithRegisterer(reg))
		grpcLoop, err := storeAPILoop(*grpcAddr, store.Register, log)
		if err != nil {
			return err
		}
		loops = append(loops, src.Run)
		if grpcLoop != nil {
			loops = append(loops, grpcLoop)
		}
	}
	srv := &ops.Server{Addr: *httpAddr, Registry: reg, Ready: busReady(b), Log: log}
	return serve(ctx, srv, loops...)
}

func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", stderr)
	var lf logFlags
	var nf natsFlags
	var labels stringsFlag
	lf.register(fs)
	nf.register(fs)
	dir := fs.String("blocks", "", "directory of blocks to ship, one ULID directory each (required)")
	site := fs.String("site", "", "site name in subjects and staging (default: derived from the labels)")
	dryRun := fs.Bool("dry-run", false, "list what would be shipped, ship nothing")
	fs.Var(&labels, "label", "external label k=v for every block (repeatable, required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--blocks is required")
	}
	lbls, err := ship.ParseLabels(labels)
	if err != nil {
		return usagef("--label: %v", err)
	}
	if len(lbls) == 0 {
		return usagef("no external labels: set --label k=v")
	}
	cfg, err := nf.config("blockflow-backfill")
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr, "backfill")
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	res, err := backfill.Run(ctx, backfill.Options{
		Dir: *dir, Labels: lbls, Site: *site, DryRun: *dryRun, Staging: b.Staging(), Publisher: b, Logger: log,
	})
	fmt.Fprintf(stdout, "%d blocks found, %d shipped\n", res.Total, res.Shipped)
	return err
}

func runBucket(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "ls" && args[0] != "import") {
		return usagef("which subcommand? blockflow bucket ls|import")
	}
	sub := args[0]
	fs := newFlagSet("bucket "+sub, stderr)
	var lf logFlags
	var of objstoreFlags
	var nf natsFlags
	lf.register(fs)
	of.register(fs)
	if sub == "import" {
		nf.register(fs)
	}
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	var cfg bus.Config
	if sub == "import" {
		var err error
		if cfg, err = nf.config("blockflow-bucket-import"); err != nil {
			return err
		}
	}
	log, err := lf.logger(stderr, "bucket")
	if err != nil {
		return err
	}
	bkt, err := of.bucket(ctx, log)
	if err != nil {
		return err
	}
	defer bkt.Close()
	if sub == "ls" {
		return listBlocks(ctx, bkt, stdout)
	}
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	res, err := bucketimport.Run(ctx, bkt, b.Catalogue(), log)
	fmt.Fprintf(stdout, "%d blocks: %d imported, %d already catalogued; %d partial uploads skipped\n", res.Blocks, res.Imported, res.Known, res.Partial)
	return err
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", stderr)
	var lf logFlags
	var nf natsFlags
	lf.register(fs)
	nf.register(fs)
	stageName := fs.String("stage", "", "the stage to rewind (its durable consumer on EVENTS, e.g. upload)")
	fromSeq := fs.Uint64("from-seq", 0, "replay from this EVENTS stream sequence")
	fromTime := fs.String("from-time", "", "replay from the first event stored at or after this RFC3339 time")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *stageName == "" {
		return usagef("--stage is required")
	}
	if (*fromSeq == 0) == (*fromTime == "") {
		return usagef("give exactly one of --from-seq and --from-time")
	}
	var since time.Time
	if *fromTime != "" {
		t, err := time.Parse(time.RFC3339, *fromTime)
		if err != nil {
			return usagef("--from-time: %v", err)
		}
		since = t
	}
	cfg, err := nf.config("blockflow-replay")
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr, "replay")
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	seq := *fromSeq
	if since.IsZero() {
		err = b.ReplayFromSequence(ctx, *stageName, seq)
	} else {
		seq, err = b.ReplayFromTime(ctx, *stageName, since)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stage %s replays from stream sequence %d\n", *stageName, seq)
	return nil
}

// listBlocks prints one line per complete block: the one place blockflow lists a bucket.
func listBlocks(ctx context.Context, bkt objstore.Bucket, w io.Writer) error {
	var ids []ulid.ULID
	err := bkt.Iter(ctx, "", false, func(name string) error {
		if id, err := ulid.Parse(strings.TrimSuffix(name, "/")); err == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list bucket %s: %w", bkt.Name(), err)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
	for _, id := range ids {
		m, err := block.ReadMeta(ctx, bkt, id)
		if objstore.IsNotFound(err) {
			continue // partial upload: no meta.json yet
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\tresolution=%s\tlevel=%d\n", id,
			time.UnixMilli(m.MinTime).UTC().Format(time.RFC3339), time.UnixMilli(m.MaxTime).UTC().Format(time.RFC3339),
			formatLabels(m.Thanos.Labels), formatResolution(m.Thanos.Downsample.Resolution), m.Compaction.Level)
	}
	return nil
}

func formatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%q", k, l[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func formatResolution(ms int64) string {
	if ms == 0 {
		return "raw"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}

func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "ls" {
		return usagef("which subcommand? blockflow dlq ls")
	}
	fs := newFlagSet("dlq ls", stderr)
	var lf logFlags
	var nf natsFlags
	lf.register(fs)
	nf.register(fs)
	stageName := fs.String("stage", "", "only this stage's dead letters")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := nf.config("blockflow-dlq")
	if err != nil {
		return err
	}
	log, err := lf.logger(stderr, "dlq")
	if err != nil {
		return err
	}
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	dls, err := b.DeadLetters(ctx, *stageName)
	if err != nil {
		return err
	}
	for _, d := range dls {
		parts := strings.Split(d.OriginSubject, ".")
		fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", d.Time.UTC().Format(time.RFC3339), d.Stage, parts[len(parts)-1], oneLine(d.Reason))
	}
	return nil
}

func runNATS(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("nats", stderr)
	var lf logFlags
	lf.register(fs)
	dataDir := fs.String("data-dir", "./data/nats", "JetStream storage directory")
	listen := fs.String("listen", "127.0.0.1:4222", "client listen address")
	domain := fs.String("jetstream.domain", "", "JetStream domain (for leaf node setups)")
	if err := parse(fs, args); err != nil {
		return err
	}
	host, port, err := splitHostPort(*listen)
	if err != nil {
		return usagef("--listen: %v", err)
	}
	log, err := lf.logger(stderr, "nats")
	if err != nil {
		return err
	}
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: *dataDir, Host: host, Port: port, JetStreamDomain: *domain, Log: log})
	if err != nil {
		return err
	}
	log.Info().Str("url", srv.ClientURL()).Msg("NATS JetStream server ready")
	<-ctx.Done()
	srv.Shutdown()
	return nil
}
