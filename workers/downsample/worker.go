// Package downsample is the downsampling stage, as Thanos' compactor does it: a raw block
// spanning at least 40h gets a 5m copy, a 5m block spanning at least 10 days a 1h copy, each
// window of each series reduced to count, sum, min, max and a reset-corrected counter in
// one 0xFF chunk (internal/aggrchunk). The input block stays. Plan picks the blocks from the
// catalogue; Worker handles one job: download, downsample one series at a time, upload with
// meta.json last, record in the catalogue, announce.
package downsample

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

// Catalogue holds one record per block.
type Catalogue interface {
	Put(ctx context.Context, rec schemas.BlockRecord) error
	// Get returns the record and its revision; a missing one gives an error wrapping
	// stage.ErrNotFound.
	Get(ctx context.Context, id ulid.ULID) (schemas.BlockRecord, uint64, error)
	// Update lets fn change the record (exists is false when there is none) and writes it
	// unless somebody wrote in between, in which case it starts over.
	Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error)
}

// Publisher publishes an event about one block.
type Publisher interface {
	PublishBlockEvent(ctx context.Context, event, site string, id ulid.ULID, v any) error
}

// noDownsampleCorrupt is the no-downsample reason for a block that cannot be read, the
// value blockflow also uses for such no-compact marks.
const noDownsampleCorrupt = block.NoCompactCorrupt

// Results of one job, the result label of blockflow_downsample_jobs_total.
const (
	resultDownsampled = "downsampled"
	resultDuplicate   = "duplicate" // output already in the bucket: a redelivery
	resultInvalid     = "invalid"   // dead-lettered
	resultError       = "error"     // retried
)

// Worker handles downsample jobs. Handle may run concurrently for different jobs.
type Worker struct {
	Bucket    objstore.Bucket
	Catalogue Catalogue
	Publisher Publisher
	// DataDir holds the blocks being worked on, under DataDir/<ulid>.
	DataDir string
	Logger  zerolog.Logger
	Metrics *Metrics // nil: none

	inflight stage.InFlight[string] // job ids
}

// Handle writes the downsampled version of job's input block. It returns nil once the new
// block is in the bucket, in the catalogue and announced; an error marked by stage.Permanent
// when the job can never succeed (an unreadable input also gets a no-downsample mark, so it
// is not planned again); any other error when a retry may succeed. A job whose output is
// already in the bucket only finishes the bookkeeping.
func (w *Worker) Handle(ctx context.Context, job schemas.DownsampleJob) (err error) {
	start := time.Now()
	log := w.Logger.With().Str(logging.FieldStage, "downsample").Str(logging.FieldBlock, job.Input.ULID.String()).
		Int64("resolution", job.Resolution).Logger()
	result := resultDownsampled
	defer func() {
		switch {
		case err == nil:
		case stage.IsPermanent(err):
			result = resultInvalid
			log.Error().Err(err).Msg("downsample job rejected")
		default:
			result = resultError
			log.Warn().Err(err).Msg("downsample failed; will retry")
		}
		w.Metrics.observe(result, time.Since(start))
	}()

	if err := job.Validate(); err != nil {
		return stage.Permanent(fmt.Errorf("invalid downsample job: %w", err))
	}
	if !w.inflight.Claim(job.ID) {
		return fmt.Errorf("block %s: already being downsampled by this worker", job.Input.ULID)
	}
	defer w.inflight.Release(job.ID)

	out := job.OutputULID()
	log = log.With().Str("output", out.String()).Logger()
	// A previous attempt may have committed the output and died before the ack.
	switch committed, err := block.ReadMeta(ctx, w.Bucket, out); {
	case err == nil:
		result = resultDuplicate
		return w.finishCommitted(ctx, job, out, committed, log)
	case !objstore.IsNotFound(err):
		return fmt.Errorf("block %s: read output meta.json: %w", out, err)
	}

	meta, err := w.readMeta(ctx, job)
	if err != nil {
		return err
	}
	inDir := filepath.Join(w.DataDir, job.Input.ULID.String())
	outDir := filepath.Join(w.DataDir, out.String())
	// Leftovers of an attempt that died are not worth resuming: start clean.
	if err := errors.Join(os.RemoveAll(inDir), os.RemoveAll(outDir)); err != nil {
		return fmt.Errorf("clean work directories: %w", err)
	}
	defer os.RemoveAll(inDir)
	defer os.RemoveAll(outDir)
	if err := w.download(ctx, job, meta, inDir); err != nil {
		return err
	}
	res, err := Block(ctx, log, inDir, meta, outDir, out, job.Resolution)
	if isInputError(err) {
		return w.reject(ctx, job, fmt.Errorf("block %s: unreadable: %w", job.Input.ULID, err))
	}
	if err != nil {
		return fmt.Errorf("block %s: downsample: %w", job.Input.ULID, err)
	}
	w.Metrics.addSamples(res.InputSamples)
	if res.SkippedHistogramSeries > 0 {
		log.Warn().Int("series", res.SkippedHistogramSeries).Msg("some series' native histograms could not be aggregated and were left out")
	}

	written, err := block.Upload(ctx, w.Bucket, outDir, res.Meta)
	if err != nil {
		return fmt.Errorf("block %s: %w", out, err)
	}
	rec := written.Record(schemas.StateLive)
	rec.Site = job.Input.Site
	if err := w.Catalogue.Put(ctx, rec); err != nil {
		return fmt.Errorf("block %s: catalogue: %w", out, err)
	}
	if err := w.announce(ctx, job, rec); err != nil {
		return err
	}
	log.Info().Uint64("series", written.Stats.NumSeries).Uint64("input_samples", res.InputSamples).
		Uint64("output_samples", written.Stats.NumSamples).Dur("took", time.Since(start)).Msg("block downsampled")
	return nil
}

// finishCommitted completes what an attempt that wrote the output's meta.json (meta) left
// undone: the catalogue record and the event. Each step is idempotent.
func (w *Worker) finishCommitted(ctx context.Context, job schemas.DownsampleJob, out ulid.ULID, meta block.Meta, log zerolog.Logger) error {
	rec, _, err := w.Catalogue.Get(ctx, out)
	switch {
	case stage.IsNotFound(err):
		fresh := meta.Record(schemas.StateLive)
		fresh.Site = job.Input.Site
		rec, err = w.Catalogue.Update(ctx, out, func(r *schemas.BlockRecord, exists bool) error {
			if !exists {
				*r = fresh
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("block %s: catalogue: %w", out, err)
		}
	case err != nil:
		return fmt.Errorf("block %s: catalogue: %w", out, err)
	}
	// The bus deduplicates by Nats-Msg-Id, so announcing twice is harmless.
	if err := w.announce(ctx, job, rec); err != nil {
		return err
	}
	log.Info().Msg("block was already downsampled; finished its bookkeeping")
	return nil
}

func (w *Worker) announce(ctx context.Context, job schemas.DownsampleJob, rec schemas.BlockRecord) error {
	ev := schemas.BlockDownsampled{Version: schemas.Version, Input: job.Input.ULID, Record: rec}
	if err := w.Publisher.PublishBlockEvent(ctx, schemas.EventDownsampled, job.Group, rec.ULID, ev); err != nil {
		return fmt.Errorf("block %s: publish %s: %w", rec.ULID, schemas.EventDownsampled, err)
	}
	return nil
}

// readMeta reads the input's meta.json from the bucket: the authority on its files and its
// Thanos section, which the output copies.
func (w *Worker) readMeta(ctx context.Context, job schemas.DownsampleJob) (block.Meta, error) {
	id := job.Input.ULID
	meta, err := block.ReadMeta(ctx, w.Bucket, id)
	switch {
	case objstore.IsNotFound(err):
		return meta, stage.Permanent(fmt.Errorf("block %s: not in the bucket", id))
	case errors.Is(err, block.ErrBadMeta):
		return meta, w.reject(ctx, job, fmt.Errorf("block %w", err))
	case err != nil:
		return meta, fmt.Errorf("block %s: get meta.json: %w", id, err)
	case meta.ULID != id:
		err = fmt.Errorf("meta.json names block %s", meta.ULID)
	case meta.Thanos.Downsample.Resolution != job.Input.Resolution:
		err = fmt.Errorf("meta.json says resolution %d, the job %d", meta.Thanos.Downsample.Resolution, job.Input.Resolution)
	case len(meta.Thanos.Labels) == 0:
		err = fmt.Errorf("meta.json has no external labels")
	}
	if err != nil {
		return meta, stage.Permanent(fmt.Errorf("block %s: %w", id, err))
	}
	return meta, nil
}

// download fetches the input's index and chunk segments into dir, checking sizes and
// hashes where thanos.files (or else the catalogue record) gives them.
func (w *Worker) download(ctx context.Context, job schemas.DownsampleJob, meta block.Meta, dir string) error {
	id := job.Input.ULID
	files := meta.Thanos.Files
	if len(files) == 0 {
		files = block.RecordFiles(job.Input.Files)
	}
	var index bool
	for _, f := range files {
		index = index || f.RelPath == block.IndexFilename
	}
	if !index || len(block.SegmentFiles(files)) == 0 && meta.Stats.NumChunks > 0 {
		return w.reject(ctx, job, fmt.Errorf("block %s: file list lacks the index or chunk segments", id))
	}
	files = slices.DeleteFunc(slices.Clone(files), func(f block.File) bool { return f.RelPath == block.MetaFilename })
	_, err := block.Download(ctx, w.Bucket, id, files, dir)
	var corrupt *block.CorruptFileError
	switch {
	case !errors.As(err, &corrupt):
		return err
	case objstore.IsNotFound(err):
		return stage.Permanent(fmt.Errorf("block %s: %w", id, err))
	default:
		return w.reject(ctx, job, fmt.Errorf("block %s: %w", id, err))
	}
}

// reject gives up on an input that cannot be read: it writes a no-downsample mark, so that
// neither blockflow nor Thanos tries again, records the reason in the catalogue, which the
// planner reads, and returns cause as permanent. Failing to mark is an error to retry.
func (w *Worker) reject(ctx context.Context, job schemas.DownsampleJob, cause error) error {
	id := job.Input.ULID
	if err := block.MarkNoDownsample(ctx, w.Bucket, id, noDownsampleCorrupt, cause.Error(), time.Now()); err != nil {
		return fmt.Errorf("block %s: mark no-downsample after %v: %w", id, cause, err)
	}
	_, err := w.Catalogue.Update(ctx, id, func(r *schemas.BlockRecord, exists bool) error {
		if !exists {
			return fmt.Errorf("block %s: %w", id, stage.ErrNotFound)
		}
		r.NoDownsample = noDownsampleCorrupt
		return nil
	})
	if err != nil && !stage.IsNotFound(err) {
		return fmt.Errorf("block %s: catalogue: %w", id, err)
	}
	return stage.Permanent(cause)
}
