package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/ops"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
	"github.com/blockflow/blockflow/workers/downsample"
	"github.com/blockflow/blockflow/workers/planner"
	"github.com/blockflow/blockflow/workers/retention"
	"github.com/blockflow/blockflow/workers/upload"
)

// stageDeps is what every worker stage runs against.
type stageDeps struct {
	bus     *bus.Bus
	bucket  objstore.Bucket
	dataDir string
	reg     prometheus.Registerer
	log     zerolog.Logger
}

// stageFlags are the settings of every stage, registered only for the stage that runs.
type stageFlags struct {
	slots        int
	ackWait      time.Duration
	diskBudget   int64
	ranges       string
	replicaLbls  stringsFlag
	consistency  time.Duration
	policy       retention.Policy
	downsampling bool
}

func (f *stageFlags) register(fs *flag.FlagSet, stage string) {
	switch stage {
	case "upload":
		fs.IntVar(&f.slots, "concurrency", 2, "blocks uploaded at once by this process")
		fs.DurationVar(&f.ackWait, "ack-wait", bus.DefaultAckWait, "lease on an event: a killed worker's event goes to another worker after this (heartbeats keep long work alive)")
	case "compact":
		fs.IntVar(&f.slots, "compact.concurrency", 1, "compaction jobs run at once by this process")
		fs.DurationVar(&f.ackWait, "ack-wait", compact.DefaultAckWait, "lease on a job (heartbeats keep long jobs alive)")
		fs.Int64Var(&f.diskBudget, "compact.disk-budget", 0, "bytes of --data-dir jobs in flight may use (0: no bound)")
	case "downsample":
		fs.IntVar(&f.slots, "downsample.concurrency", 1, "downsampling jobs run at once by this process")
		fs.DurationVar(&f.ackWait, "ack-wait", compact.DefaultAckWait, "lease on a job (heartbeats keep long jobs alive)")
	case "plan":
		f.registerPlan(fs)
	case "retention":
		f.registerRetention(fs)
	}
}

func (f *stageFlags) registerPlan(fs *flag.FlagSet) {
	fs.StringVar(&f.ranges, "compact.ranges", "2h,8h,2d,14d", "aligned compaction ranges, ascending")
	fs.Var(&f.replicaLbls, "deduplication.replica-label", "external label that tells HA replicas apart; their blocks are merged with penalty deduplication (repeatable)")
	fs.DurationVar(&f.consistency, "consistency-delay", 30*time.Minute, "minimum age of blocks blockflow did not upload itself before they are compacted")
}

func (f *stageFlags) registerRetention(fs *flag.FlagSet) {
	fs.DurationVar(&f.policy.DeleteDelay, "delete-delay", retention.DefaultDeleteDelay, "time between a block's deletion mark and its deletion")
	fs.DurationVar(&f.policy.Raw, "retention.resolution-raw", 0, "how long raw blocks are kept (0: for ever)")
	fs.DurationVar(&f.policy.FiveMinutes, "retention.resolution-5m", 0, "how long 5m blocks are kept (0: for ever)")
	fs.DurationVar(&f.policy.OneHour, "retention.resolution-1h", 0, "how long 1h blocks are kept (0: for ever)")
	fs.BoolVar(&f.downsampling, "downsampling", true, "downsampling runs: enforce Thanos' minimum raw (40h) and 5m (10d) retention")
}

// checkRetention applies Thanos' guards: with downsampling on, raw data must outlive the
// 40h a block needs to be downsampled to 5m, and 5m data the 10 days to reach 1h.
func (f *stageFlags) checkRetention() error {
	if !f.downsampling {
		return nil
	}
	if r := f.policy.Raw; r != 0 && r.Milliseconds() < downsample.MinSpan5m {
		return usagef("--retention.resolution-raw=%s is shorter than the 40h raw blocks need before they are downsampled", r)
	}
	if r := f.policy.FiveMinutes; r != 0 && r.Milliseconds() < downsample.MinSpan1h {
		return usagef("--retention.resolution-5m=%s is shorter than the 10 days 5m blocks need before they are downsampled", r)
	}
	return nil
}

// validate checks the stage's flags before anything connects.
func (f *stageFlags) validate(stage string) error {
	switch stage {
	case "plan":
		if _, err := planner.ParseRanges(f.ranges); err != nil {
			return usagef("--compact.ranges: %v", err)
		}
	case "retention":
		return f.checkRetention()
	}
	return nil
}

// holder names this process in leases.
func holder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// stageLoop returns the function that runs one stage until ctx ends. The stage's flags
// must have passed validate.
func (f *stageFlags) stageLoop(stage string, d stageDeps) (func(context.Context) error, error) {
	b := d.bus
	switch stage {
	case "upload":
		w := &upload.Worker{Bucket: d.bucket, Staging: b.Staging(), Catalogue: b.Catalogue(), Publisher: b,
			DataDir: filepath.Join(d.dataDir, "upload"), Logger: d.log, Metrics: upload.NewMetrics(d.reg)}
		spec := bus.ConsumerSpec{Stream: bus.StreamEvents, Durable: "upload", FilterSubjects: []string{b.EventFilter(schemas.EventReady)},
			Slots: f.slots, AckWait: f.ackWait}
		return func(ctx context.Context) error { return bus.Run(ctx, b, spec, w.Handle) }, nil
	case "compact":
		w, err := compact.New(compact.Options{Bucket: d.bucket, Catalogue: b.Catalogue(), Publisher: b, DataDir: d.dataDir,
			DiskBudget: f.diskBudget, Logger: d.log, Metrics: compact.NewMetrics(d.reg)})
		if err != nil {
			return nil, err
		}
		spec := bus.ConsumerSpec{Stream: bus.StreamJobs, Durable: compact.Durable, FilterSubjects: []string{b.JobFilter(schemas.JobCompact)},
			Slots: f.slots, AckWait: f.ackWait}
		return func(ctx context.Context) error { return bus.Run(ctx, b, spec, w.Handle) }, nil
	case "downsample":
		w := &downsample.Worker{Bucket: d.bucket, Catalogue: b.Catalogue(), Publisher: b,
			DataDir: filepath.Join(d.dataDir, "downsample"), Logger: d.log, Metrics: downsample.NewMetrics(d.reg)}
		spec := bus.ConsumerSpec{Stream: bus.StreamJobs, Durable: "downsample", FilterSubjects: []string{b.JobFilter(schemas.JobDownsample)},
			Slots: f.slots, AckWait: f.ackWait}
		return func(ctx context.Context) error { return bus.Run(ctx, b, spec, w.Handle) }, nil
	case "plan":
		ranges, err := planner.ParseRanges(f.ranges)
		if err != nil {
			return nil, usagef("--compact.ranges: %v", err)
		}
		o := planner.Options{Catalogue: b.Catalogue(), Queue: b, Leader: b.Lease(planner.LeaseName, holder()),
			Config: planner.Config{Ranges: ranges, ReplicaLabels: f.replicaLbls, ConsistencyDelay: f.consistency},
			Logger: d.log, Registerer: d.reg}
		return func(ctx context.Context) error { return planner.Run(ctx, o) }, nil
	case "retention":
		o := retention.Options{Bucket: d.bucket, Catalogue: b.Catalogue(), Publisher: b, Leader: b.Lease(retention.LeaseName, holder()),
			Policy: f.policy, Logger: d.log, Registerer: d.reg}
		return func(ctx context.Context) error { return retention.Run(ctx, o) }, nil
	}
	return nil, usagef("unknown stage %q (known: %s)", stage, strings.Join(stages, ", "))
}

// stages are the worker pools `blockflow worker` runs.
var stages = []string{"upload", "compact", "downsample", "retention", "plan"}

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("which stage? blockflow worker %s", strings.Join(stages, "|"))
	}
	stageName, args := args[0], args[1:]
	if !slices.Contains(stages, stageName) {
		return usagef("unknown stage %q (known: %s)", stageName, strings.Join(stages, ", "))
	}
	fs := newFlagSet("worker "+stageName, stderr)
	var lf logFlags
	var nf natsFlags
	var of objstoreFlags
	var sf stageFlags
	lf.register(fs)
	nf.register(fs)
	if stageName != "plan" {
		of.register(fs)
	}
	sf.register(fs, stageName)
	dataDir := fs.String("data-dir", "./data/worker", "local scratch space for blocks in flight")
	httpAddr := fs.String("http-address", "0.0.0.0:10902", "listen address for /metrics and probes")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := nf.config("blockflow-worker-" + stageName)
	if err != nil {
		return err
	}
	if err := sf.validate(stageName); err != nil {
		return err
	}
	log, err := lf.logger(stderr, "worker-"+stageName)
	if err != nil {
		return err
	}
	log = log.With().Str(logging.FieldStage, stageName).Logger()
	reg := ops.NewRegistry()
	var bkt objstore.Bucket
	if stageName != "plan" {
		if bkt, err = of.bucket(ctx, log); err != nil {
			return err
		}
		bkt = objstore.Instrument(bkt, reg)
		defer bkt.Close()
	}
	cfg.Registerer = reg
	b, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer b.Close()
	loop, err := sf.stageLoop(stageName, stageDeps{bus: b, bucket: bkt, dataDir: filepath.Clean(*dataDir), reg: reg, log: log})
	if err != nil {
		return err
	}
	srv := &ops.Server{Addr: *httpAddr, Registry: reg, Ready: busReady(b), Log: log}
	return serve(ctx, srv, loop)
}
