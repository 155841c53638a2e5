// Package planner is the compaction planner: it follows the catalogue, groups live blocks
// as the Thanos compactor does (resolution and external labels, without replica labels),
// plans each group with the Thanos level planner (Plan, a pure function) and publishes the
// compactions as jobs for the pool of compaction workers. Several planners may run for
// availability; a lease lets one of them plan at a time.
package planner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/catalogview"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/downsample"
)

// Catalogue delivers every block record, then synced, then each change, until ctx ends.
type Catalogue = catalogview.Catalogue

// Queue is the job queue.
type Queue interface {
	// PublishJob queues v on the job subject of kind and group; a job id published again
	// within the queue's duplicate window is queued once.
	PublishJob(ctx context.Context, kind, group, jobID string, v any) error
	// QueuedJobs returns every job of kind that is waiting or being worked on.
	QueuedJobs(ctx context.Context, kind string) ([][]byte, error)
}

// Leader runs fn while this process holds the planner's lease, with a context that ends
// when the lease is lost; it returns when ctx ends.
type Leader = catalogview.Leader

// Defaults of Options.
const (
	DefaultResync = time.Minute
	// LeaseName is the lease planners compete for.
	LeaseName = "planner-compact"
)

const (
	// publishRetry is the wait before planning again after a failed publish.
	publishRetry = 5 * time.Second
)

// Options configure Run.
type Options struct {
	Catalogue Catalogue
	Queue     Queue
	// Leader elects one planner among several; nil means this process always plans (it
	// must then be the only planner).
	Leader Leader
	Config Config
	// Resync is how often the planner re-reads the job queue and plans even without a
	// catalogue change (default DefaultResync): it notices jobs that were dead-lettered.
	Resync     time.Duration
	Logger     zerolog.Logger
	Registerer prometheus.Registerer
}

// Run plans compactions until ctx ends. It follows the catalogue all the time, so a
// standby planner takes over with its state loaded; while it leads, it plans on every
// catalogue change and publishes each job whose inputs no queued job holds.
func Run(ctx context.Context, o Options) error {
	if o.Catalogue == nil || o.Queue == nil {
		return errors.New("planner: catalogue and queue are required")
	}
	cfg, err := o.Config.withDefaults()
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	o.Config = cfg
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	p := &planner{
		o:    o,
		log:  o.Logger.With().Str(logging.FieldStage, "planner").Logger(),
		m:    newMetrics(o.Registerer),
		view: catalogview.New(),
	}

	return p.view.Run(ctx, o.Catalogue, o.Leader, p.lead)
}

type planner struct {
	o   Options
	log zerolog.Logger
	m   *metrics

	view *catalogview.View
}

// lead plans while this planner leads (until ctx ends).
func (p *planner) lead(ctx context.Context) error {
	p.m.leader.Set(1)
	defer p.m.leader.Set(0)
	if !p.view.WaitSynced(ctx) {
		return nil
	}
	p.log.Info().Msg("planning compactions")
	var (
		queued map[string]schemas.CompactJob // jobs in the queue, by id
		readAt time.Time
		resync = time.NewTicker(p.o.Resync)
	)
	defer resync.Stop()
	for {
		if queued == nil || time.Since(readAt) >= p.o.Resync {
			q, err := p.readQueue(ctx)
			switch {
			case err == nil:
				queued, readAt = q, time.Now()
			case queued == nil:
				// Never plan without knowing the queue: a job of the last leader may hold
				// blocks.
				p.log.Warn().Err(err).Msg("reading the job queue failed; retrying")
				if !sleep(ctx, publishRetry) {
					return nil
				}
				continue
			default:
				p.log.Warn().Err(err).Msg("reading the job queue failed; planning against the last known queue")
			}
		}
		wake, err := p.planOnce(ctx, queued)
		if err != nil {
			return err
		}
		if !p.view.Wait(ctx, wake, resync.C) {
			return nil
		}
	}
}

// planOnce plans and publishes what no queued job blocks. It returns when to plan again
// without a catalogue change (zero: at the next resync). queued is updated in place.
func (p *planner) planOnce(ctx context.Context, queued map[string]schemas.CompactJob) (time.Time, error) {
	blocks := p.view.Snapshot()
	live := make(map[ulid.ULID]bool, len(blocks))
	for _, b := range blocks {
		live[b.ULID] = b.State == schemas.StateLive && b.NoCompact == ""
	}
	// A queued job whose inputs are no longer all live is done (inputs marked), or cannot
	// be done (an input was marked no-compact and the job dead-lettered).
	busy := map[ulid.ULID]bool{}
	for id, job := range queued {
		done := false
		for _, in := range job.Inputs {
			if !live[in.ULID] {
				done = true
			}
		}
		if done {
			delete(queued, id)
			continue
		}
		for _, in := range job.Inputs {
			busy[in.ULID] = true
		}
	}

	res, err := Plan(blocks, time.Now(), p.o.Config)
	if err != nil {
		return time.Time{}, err
	}
	p.m.todo.Set(float64(len(res.Jobs)))
	wake := res.Wake
	for _, job := range res.Jobs {
		if _, ok := queued[job.ID]; ok {
			continue
		}
		if holdsAny(busy, job.Inputs) {
			// A queued job holds some of its inputs; plan it again once that one is done.
			continue
		}
		if err := p.o.Queue.PublishJob(ctx, schemas.JobCompact, job.Group, job.ID, job); err != nil {
			if ctx.Err() != nil {
				return time.Time{}, nil
			}
			p.log.Warn().Err(err).Str("job", job.ID).Msg("publishing a compaction job failed; will retry")
			retry := time.Now().Add(publishRetry)
			if wake.IsZero() || retry.Before(wake) {
				wake = retry
			}
			continue
		}
		p.m.published.Inc()
		queued[job.ID] = job
		for _, in := range job.Inputs {
			busy[in.ULID] = true
		}
		p.log.Info().Str("job", job.ID).Str("group", job.Group).Int("inputs", len(job.Inputs)).
			Time("min_time", time.UnixMilli(job.MinTime()).UTC()).Time("max_time", time.UnixMilli(job.MaxTime()).UTC()).
			Str("deduplication", job.Deduplication).Msg("compaction planned")
	}
	p.planDownsampling(ctx, blocks)
	return wake, nil
}

// planDownsampling publishes a job for each block that qualifies for downsampling (raw
// spanning 40h or more, 5m spanning 10 days or more) and is not covered yet. It runs as
// soon as such a block is catalogued, not after every compaction as in Thanos. A job
// still queued is not published again; a failure to publish is retried at the next plan.
func (p *planner) planDownsampling(ctx context.Context, blocks []schemas.BlockRecord) {
	jobs := downsample.Plan(blocks)
	if len(jobs) == 0 {
		return
	}
	data, err := p.o.Queue.QueuedJobs(ctx, schemas.JobDownsample)
	if err != nil {
		p.log.Warn().Err(err).Msg("reading the downsampling queue failed; will retry")
		return
	}
	queued := make(map[string]bool, len(data))
	for _, d := range data {
		if job, err := schemas.Decode[schemas.DownsampleJob](d); err == nil {
			queued[job.ID] = true
		}
	}
	for _, job := range jobs {
		if queued[job.ID] {
			continue
		}
		if err := p.o.Queue.PublishJob(ctx, schemas.JobDownsample, job.Group, job.ID, job); err != nil {
			p.log.Warn().Err(err).Str("job", job.ID).Msg("publishing a downsampling job failed; will retry")
			continue
		}
		p.m.published.Inc()
		p.log.Info().Str("job", job.ID).Str("group", job.Group).Str("block", job.Input.ULID.String()).
			Int64("resolution", job.Resolution).Msg("downsampling planned")
	}
}

func holdsAny(busy map[ulid.ULID]bool, refs []schemas.BlockRef) bool {
	for _, in := range refs {
		if busy[in.ULID] {
			return true
		}
	}
	return false
}

// readQueue returns the compaction jobs in the queue, by id.
func (p *planner) readQueue(ctx context.Context) (map[string]schemas.CompactJob, error) {
	data, err := p.o.Queue.QueuedJobs(ctx, schemas.JobCompact)
	if err != nil {
		return nil, err
	}
	out := make(map[string]schemas.CompactJob, len(data))
	for _, d := range data {
		job, err := schemas.Decode[schemas.CompactJob](d)
		if err != nil {
			// The worker dead-letters it; it holds no inputs.
			p.log.Warn().Err(err).Msg("ignoring an invalid queued job")
			continue
		}
		out[job.ID] = job
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
