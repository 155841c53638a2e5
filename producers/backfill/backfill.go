// Package backfill ships a directory of historical blocks (for example the output of
// promtool tsdb create-blocks-from openmetrics) the way the sidecar ships fresh ones: staged
// files and a block.ready event, so they take the same upload path. It keeps its progress in
// <dir>/blockflow.backfill.json, so a run that stops part way resumes where it stopped.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

// ProgressFilename is the progress file inside the backfilled directory; it has the shape
// of thanos.shipper.json.
const ProgressFilename = "blockflow.backfill.json"

// Options configure one backfill run.
type Options struct {
	// Dir holds the blocks, one ULID directory each.
	Dir string
	// Labels are the external labels given to every block; required.
	Labels map[string]string
	// Site names the producer in subjects and staging names; default ship.SiteFromLabels.
	Site string
	// DryRun lists what would be shipped and ships nothing.
	DryRun    bool
	Staging   ship.Staging
	Publisher ship.Publisher
	Logger    zerolog.Logger
	// Backoff makes the retry schedule of one block (default: exponential, up to 2 minutes
	// in all); when it stops, the block counts as failed and a re-run picks it up.
	Backoff func() backoff.BackOff
}

// Result counts what a run did.
type Result struct {
	Total   int   // complete blocks found
	Shipped int   // shipped by this run (or, with DryRun, that would be)
	Done    int   // already shipped by an earlier run
	Skipped int   // empty blocks
	Failed  int   // could not be read or shipped
	Bytes   int64 // bytes shipped (or that would be)
}

// Run ships every block in opts.Dir not yet listed in the progress file, oldest first.
// Blocks that fail are logged and left for a re-run; the error then says how many.
func Run(ctx context.Context, opts Options) (Result, error) {
	var res Result
	if len(opts.Labels) == 0 {
		return res, errors.New("backfill: no external labels: set --label k=v")
	}
	site := opts.Site
	if site == "" {
		site = ship.SiteFromLabels(opts.Labels)
	}
	if err := ship.CheckSite(site); err != nil {
		return res, fmt.Errorf("backfill: %w", err)
	}
	if !opts.DryRun && (opts.Staging == nil || opts.Publisher == nil) {
		return res, errors.New("backfill: staging and publisher are required")
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	log := opts.Logger.With().Str(logging.FieldComponent, "backfill").Str(logging.FieldSite, site).Logger()

	progressPath := filepath.Join(opts.Dir, ProgressFilename)
	done, err := ship.ReadProgress(progressPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		done = make(map[ulid.ULID]bool)
	case err != nil:
		return res, fmt.Errorf("backfill: %w (remove it to ship every block again)", err)
	}

	blocks, _, err := ship.Scan(opts.Dir, func(id ulid.ULID, err error) {
		res.Failed++
		log.Error().Err(err).Str(logging.FieldBlock, id.String()).Msg("skipping unreadable block")
	})
	if err != nil {
		return res, fmt.Errorf("backfill: %w", err)
	}
	res.Total = len(blocks) + res.Failed

	var (
		todo      []ship.Local
		sizes     []int64
		todoBytes int64
	)
	for _, b := range blocks {
		switch {
		case done[b.Meta.ULID]:
			res.Done++
		case b.Meta.Stats.NumSamples == 0:
			res.Skipped++
			log.Info().Str(logging.FieldBlock, b.Meta.ULID.String()).Msg("skipping empty block")
		default:
			todo = append(todo, b)
			sizes = append(sizes, dirSize(b.Dir))
			todoBytes += sizes[len(sizes)-1]
		}
	}
	log.Info().Int("blocks", len(todo)).Int64("bytes", todoBytes).Int("already_shipped", res.Done).
		Bool("dry_run", opts.DryRun).Msg("backfill starting")

	shipper := &ship.Shipper{
		Staging:   opts.Staging,
		Publisher: opts.Publisher,
		Site:      site,
		Labels:    opts.Labels,
		Producer:  schemas.ProducerBackfill,
	}
	for i, b := range todo {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		blog := log.With().Str(logging.FieldBlock, b.Meta.ULID.String()).
			Str("progress", fmt.Sprintf("%d/%d", i+1, len(todo))).Logger()
		if opts.DryRun {
			res.Shipped++
			res.Bytes += sizes[i]
			blog.Info().Int64("min_time", b.Meta.MinTime).Int64("max_time", b.Meta.MaxTime).
				Int("level", b.Meta.Compaction.Level).Int64("bytes", sizes[i]).Msg("would ship block")
			continue
		}
		var ev schemas.BlockReady
		op := func() error {
			var err error
			ev, err = shipper.Ship(ctx, b)
			return err
		}
		notify := func(err error, wait time.Duration) {
			blog.Warn().Err(err).Dur("retry_in", wait).Msg("ship failed")
		}
		if err := backoff.RetryNotify(op, backoff.WithContext(opts.Backoff(), ctx), notify); err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			res.Failed++
			blog.Error().Err(err).Msg("cannot ship block; a re-run will try again")
			continue
		}
		done[b.Meta.ULID] = true
		if err := ship.WriteProgress(progressPath, done); err != nil {
			return res, fmt.Errorf("backfill: %w", err)
		}
		res.Shipped++
		res.Bytes += ship.Size(ev)
		blog.Info().Int64("bytes", ship.Size(ev)).Int64("total_bytes", res.Bytes).Msg("block shipped")
	}
	log.Info().Int("shipped", res.Shipped).Int64("bytes", res.Bytes).Int("failed", res.Failed).
		Int("skipped", res.Skipped).Msg("backfill finished")
	if res.Failed > 0 {
		return res, fmt.Errorf("backfill: %d of %d blocks failed; run again to retry them", res.Failed, res.Total)
	}
	return res, nil
}

func defaultBackoff() backoff.BackOff {
	bo := backoff.NewExponentialBackOff()
	bo.MaxElapsedTime = 2 * time.Minute
	return bo
}

// dirSize adds up the regular files under dir, for progress reports only.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
