// Package compact is the compaction stage, a pool of workers: each job (from the planner)
// names blocks of one compaction group; a worker downloads them, merges them with the
// Prometheus TSDB compactor (overlapping blocks vertically, HA replicas with penalty
// deduplication), uploads the output with meta.json last, records it live in the
// catalogue, and marks the inputs for deletion. The output's ULID comes from the job id,
// so a redelivered job rewrites the same block instead of adding one.
//
// A block that cannot be read, or whose compaction would break the TSDB index limits,
// gets a no-compact mark and the job is dead-lettered: its group is planned again
// without it, where the Thanos compactor halts.
package compact

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/upload"
)

// Settings of the stage's consumer, for the wiring in cmd/blockflow.
const (
	// Durable is the consumer the pool shares, on the JOBS stream, filtered to compaction
	// jobs.
	Durable = "compact"
	// DefaultAckWait is the lease on a job; the bus renews it every third while the job
	// runs, so it only bounds how long a killed worker's job waits to be redelivered.
	DefaultAckWait = time.Minute
)

// DefaultMaxIndexSize is the largest index a compaction may produce: the TSDB index
// format addresses at most 64 GiB (as Thanos' --compact.block-max-index-size).
const DefaultMaxIndexSize int64 = 64 << 30

// workDir is the worker's directory under Options.DataDir.
const workDir = "compact"

// Catalogue holds one record per block.
type Catalogue interface {
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

// Options configure a Worker.
type Options struct {
	Bucket    objstore.Bucket
	Catalogue Catalogue
	Publisher Publisher
	// DataDir holds the jobs' inputs and outputs, under DataDir/compact/<job id>.
	DataDir string
	// DiskBudget bounds the bytes of DataDir that jobs in flight may use (inputs plus as
	// much again for the output); a job waits until its share is free, and a job larger
	// than the budget runs alone. Zero means no bound.
	DiskBudget int64
	// MaxIndexSize is the largest output index (default DefaultMaxIndexSize), estimated as
	// the sum of the inputs' indexes.
	MaxIndexSize int64
	Logger       zerolog.Logger
	Metrics      *Metrics // nil: none
}

// Worker handles compaction jobs; Handle may run concurrently for different jobs.
type Worker struct {
	o    Options
	log  zerolog.Logger
	disk *semaphore.Weighted // nil without a budget

	inflight stage.InFlight[string] // job ids
}

// New returns a worker, and removes what a killed worker left in DataDir/compact.
func New(o Options) (*Worker, error) {
	switch {
	case o.Bucket == nil || o.Catalogue == nil || o.Publisher == nil:
		return nil, errors.New("compact: bucket, catalogue and publisher are required")
	case o.DataDir == "":
		return nil, errors.New("compact: no data directory")
	case o.DiskBudget < 0:
		return nil, fmt.Errorf("compact: negative disk budget %d", o.DiskBudget)
	}
	if o.MaxIndexSize <= 0 {
		o.MaxIndexSize = DefaultMaxIndexSize
	}
	dir := filepath.Join(o.DataDir, workDir)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("compact: clean %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("compact: %w", err)
	}
	w := &Worker{
		o:   o,
		log: o.Logger.With().Str(logging.FieldStage, "compact").Logger(),
	}
	if o.DiskBudget > 0 {
		w.disk = semaphore.NewWeighted(o.DiskBudget)
	}
	return w, nil
}

// Handle runs one compaction job. It returns nil once the output is in the bucket and
// catalogued live and every input is marked for deletion (or there is nothing to do); an
// error marked by stage.Permanent when the job can never run (an input got a no-compact
// mark); any other error when a retry may succeed.
func (w *Worker) Handle(ctx context.Context, job schemas.CompactJob) (err error) {
	start := time.Now()
	log := w.log.With().Str("job", job.ID).Str("group", job.Group).Logger()
	result := resultCompacted
	defer func() {
		switch {
		case err == nil:
		case stage.IsPermanent(err):
			if result != resultNoCompact {
				result = resultInvalid
			}
			log.Error().Err(err).Msg("compaction job dead-lettered")
		default:
			result = resultError
			log.Warn().Err(err).Msg("compaction failed; will retry")
		}
		w.o.Metrics.observe(result, time.Since(start))
	}()

	if err := job.Validate(); err != nil {
		return stage.Permanent(fmt.Errorf("job %s: %w", job.ID, err))
	}
	out, err := job.OutputULID()
	if err != nil {
		return stage.Permanent(err)
	}
	log = log.With().Str(logging.FieldBlock, out.String()).Logger()
	if !w.inflight.Claim(job.ID) {
		return fmt.Errorf("job %s: already running in this process", job.ID)
	}
	defer w.inflight.Release(job.ID)

	// A previous delivery may have committed the output and died before the ack.
	switch meta, err := block.ReadMeta(ctx, w.o.Bucket, out); {
	case err == nil:
		result = resultResumed
		return w.commit(ctx, job, meta, log)
	case !objstore.IsNotFound(err):
		return fmt.Errorf("job %s: read output meta.json: %w", job.ID, err)
	}

	inputs, err := w.inputs(ctx, job)
	var stale staleError
	if errors.As(err, &stale) {
		result = resultStale
		log.Info().Err(err).Msg("compaction job is stale; nothing to do")
		return nil
	}
	if err != nil {
		return err
	}
	if big, total, ok := oversized(inputs, w.o.MaxIndexSize); ok {
		result = resultNoCompact
		details := fmt.Sprintf("job %s: the inputs' indexes add up to %d bytes, over the limit of %d", job.ID, total, w.o.MaxIndexSize)
		return w.noCompact(ctx, big.ULID, block.NoCompactIndexSize, details, log)
	}

	release, err := w.reserveDisk(ctx, inputs)
	if err != nil {
		return fmt.Errorf("job %s: %w", job.ID, err)
	}
	defer release()
	dir := filepath.Join(w.o.DataDir, workDir, job.ID)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("job %s: clean %s: %w", job.ID, dir, err)
	}
	defer os.RemoveAll(dir)

	meta, err := w.build(ctx, job, dir, inputs, out, log)
	var bad badBlockError
	switch {
	case errors.As(err, &bad):
		result = resultNoCompact
		return w.noCompact(ctx, bad.id, bad.reason, fmt.Sprintf("job %s: %v", job.ID, bad.err), log)
	case err != nil:
		return err
	case meta.ULID == (ulid.ULID{}):
		result = resultEmpty
		log.Info().Msg("the inputs hold no samples; marking them without an output")
		return w.markInputs(ctx, job, "compaction gave no samples", log)
	}
	return w.upload(ctx, job, filepath.Join(dir, "out", out.String()), meta, log)
}

// build downloads the inputs into dir and compacts them into dir/out/<out>. It returns
// the output's meta.json, ready to upload, or a zero Meta when the inputs hold no samples.
func (w *Worker) build(ctx context.Context, job schemas.CompactJob, dir string, inputs []schemas.BlockRecord, out ulid.ULID, log zerolog.Logger) (block.Meta, error) {
	start := time.Now()
	dirs, err := w.download(ctx, dir, inputs)
	if err != nil {
		return block.Meta{}, err
	}
	log.Info().Dur("took", time.Since(start)).Msg("inputs downloaded")
	start = time.Now()
	meta, err := w.compact(ctx, job, dir, dirs, out, log)
	if err == nil {
		log.Info().Dur("took", time.Since(start)).Uint64("samples", meta.Stats.NumSamples).Msg("inputs compacted")
	}
	return meta, err
}

// upload writes the output to the bucket, meta.json last, and commits the job.
func (w *Worker) upload(ctx context.Context, job schemas.CompactJob, dir string, meta block.Meta, log zerolog.Logger) error {
	start := time.Now()
	written, err := block.Upload(ctx, w.o.Bucket, dir, meta)
	if err != nil {
		return fmt.Errorf("job %s: %w", job.ID, err)
	}
	var n int64
	for _, f := range written.Thanos.Files {
		n += f.SizeBytes
	}
	log.Info().Dur("took", time.Since(start)).Int64("bytes", n).Msg("output uploaded")
	w.o.Metrics.addBytes("uploaded", n)
	w.o.Metrics.addSamples(written.Stats.NumSamples)
	return w.commit(ctx, job, written, log)
}

// commit records the uploaded output live (unless the catalogue knows it already: a later
// compaction may have marked it), announces it and marks the inputs. Every step is
// idempotent, so a redelivered job finishes what a killed worker started.
func (w *Worker) commit(ctx context.Context, job schemas.CompactJob, meta block.Meta, log zerolog.Logger) error {
	rec, _, err := w.o.Catalogue.Get(ctx, meta.ULID)
	switch {
	case stage.IsNotFound(err):
		fresh := meta.Record(schemas.StateLive)
		rec, err = w.o.Catalogue.Update(ctx, meta.ULID, func(r *schemas.BlockRecord, exists bool) error {
			if !exists {
				*r = fresh
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("job %s: catalogue output %s: %w", job.ID, meta.ULID, err)
		}
	case err != nil:
		return fmt.Errorf("job %s: catalogue output %s: %w", job.ID, meta.ULID, err)
	}
	parents := make([]ulid.ULID, 0, len(job.Inputs))
	for _, in := range job.Inputs {
		parents = append(parents, in.ULID)
	}
	ev := schemas.BlockCompacted{Version: schemas.Version, JobID: job.ID, Record: rec, Parents: parents}
	if err := w.o.Publisher.PublishBlockEvent(ctx, schemas.EventCompacted, job.Group, meta.ULID, ev); err != nil {
		return fmt.Errorf("job %s: publish %s: %w", job.ID, schemas.EventCompacted, err)
	}
	if err := w.markInputs(ctx, job, "compacted into "+meta.ULID.String(), log); err != nil {
		return err
	}
	log.Info().Int("inputs", len(job.Inputs)).Uint64("samples", meta.Stats.NumSamples).
		Int64("min_time", meta.MinTime).Int64("max_time", meta.MaxTime).Int("level", meta.Compaction.Level).
		Msg("compaction committed")
	return nil
}

// markInputs marks every input for deletion: deletion-mark.json in the bucket, then the
// catalogue state, then the event.
func (w *Worker) markInputs(ctx context.Context, job schemas.CompactJob, reason string, log zerolog.Logger) error {
	for _, in := range job.Inputs {
		rec, _, err := w.o.Catalogue.Get(ctx, in.ULID)
		switch {
		case stage.IsNotFound(err):
			log.Warn().Str("input", in.ULID.String()).Msg("input not in the catalogue; not marking it")
			continue
		case err != nil:
			return fmt.Errorf("job %s: catalogue input %s: %w", job.ID, in.ULID, err)
		case rec.State != schemas.StateLive:
			continue // marked by an earlier delivery (or by retention)
		}
		rec, err = block.MarkDeleted(ctx, w.o.Bucket, w.o.Catalogue, in.ULID, reason, time.Now())
		if err != nil {
			return fmt.Errorf("job %s: mark input %s: %w", job.ID, in.ULID, err)
		}
		ev := schemas.BlockStateChanged{Version: schemas.Version, Record: rec, Reason: reason}
		if err := w.o.Publisher.PublishBlockEvent(ctx, schemas.EventMarked, job.Group, in.ULID, ev); err != nil {
			return fmt.Errorf("job %s: publish %s: %w", job.ID, schemas.EventMarked, err)
		}
	}
	return nil
}

// noCompact marks id no-compact in the bucket and the catalogue (the planner then plans
// its group without it) and returns the permanent error that dead-letters the job.
func (w *Worker) noCompact(ctx context.Context, id ulid.ULID, reason, details string, log zerolog.Logger) error {
	if err := block.MarkNoCompact(ctx, w.o.Bucket, id, reason, details, time.Now()); err != nil {
		return fmt.Errorf("mark %s no-compact: %w", id, err)
	}
	_, err := w.o.Catalogue.Update(ctx, id, func(r *schemas.BlockRecord, exists bool) error {
		if !exists {
			return fmt.Errorf("block %s: %w", id, stage.ErrNotFound)
		}
		r.NoCompact = reason
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalogue no-compact mark of %s: %w", id, err)
	}
	log.Error().Str("input", id.String()).Str("reason", reason).Str("details", details).
		Msg("block marked no-compact; its group is compacted without it")
	return stage.Permanent(fmt.Errorf("block %s marked no-compact (%s): %s", id, reason, details))
}

// staleError says a job's inputs are no longer what the planner saw: one was compacted,
// deleted or marked no-compact since.
type staleError struct{ reason string }

func (s staleError) Error() string { return s.reason }

// inputs returns the catalogue records of the job's inputs, all live.
func (w *Worker) inputs(ctx context.Context, job schemas.CompactJob) ([]schemas.BlockRecord, error) {
	out := make([]schemas.BlockRecord, 0, len(job.Inputs))
	for _, in := range job.Inputs {
		rec, _, err := w.o.Catalogue.Get(ctx, in.ULID)
		switch {
		case stage.IsNotFound(err):
			return nil, stage.Permanent(fmt.Errorf("job %s: input %s is not in the catalogue", job.ID, in.ULID))
		case err != nil:
			return nil, fmt.Errorf("job %s: catalogue input %s: %w", job.ID, in.ULID, err)
		case rec.State != schemas.StateLive:
			return nil, staleError{fmt.Sprintf("input %s is %s", in.ULID, rec.State)}
		case rec.NoCompact != "":
			return nil, staleError{fmt.Sprintf("input %s is marked no-compact (%s)", in.ULID, rec.NoCompact)}
		case rec.MinTime != in.MinTime || rec.MaxTime != in.MaxTime || rec.Resolution != job.Resolution:
			return nil, stage.Permanent(fmt.Errorf("job %s: input %s is [%d, %d) at resolution %d in the catalogue, [%d, %d) at %d in the job",
				job.ID, in.ULID, rec.MinTime, rec.MaxTime, rec.Resolution, in.MinTime, in.MaxTime, job.Resolution))
		}
		out = append(out, rec)
	}
	return out, nil
}

// oversized reports whether the inputs' indexes add up to more than limit, and if so the
// input with the largest index: it gets the no-compact mark, as in Thanos' large index
// filter.
func oversized(inputs []schemas.BlockRecord, limit int64) (schemas.BlockRecord, int64, bool) {
	var (
		total   int64
		largest schemas.BlockRecord
		size    int64 = -1
	)
	for _, in := range inputs {
		s := in.FileSize(block.IndexFilename)
		total += max(s, 0)
		if s > size {
			largest, size = in, s
		}
	}
	return largest, total, total > limit
}

// reserveDisk waits until the job's share of the disk budget is free.
func (w *Worker) reserveDisk(ctx context.Context, inputs []schemas.BlockRecord) (func(), error) {
	if w.disk == nil {
		return func() {}, nil
	}
	var need int64
	for _, in := range inputs {
		for _, f := range in.Files {
			need += f.Size
		}
	}
	// Inputs plus an output of at most their size; a larger job runs alone.
	need = min(max(2*need, 1), w.o.DiskBudget)
	if err := w.disk.Acquire(ctx, need); err != nil {
		return nil, fmt.Errorf("wait for disk: %w", err)
	}
	return func() { w.disk.Release(need) }, nil
}

// badBlockError says an input block is unusable: it gets a no-compact mark.
type badBlockError struct {
	id     ulid.ULID
	reason string
	err    error
}

func (b badBlockError) Error() string { return fmt.Sprintf("block %s: %v", b.id, b.err) }
func (b badBlockError) Unwrap() error { return b.err }

// compact merges the downloaded inputs (dirs, in the job's order) into dir/out/<out>.
func (w *Worker) compact(ctx context.Context, job schemas.CompactJob, dir string, dirs []string, out ulid.ULID, log zerolog.Logger) (block.Meta, error) {
	slogger := slog.New(zerolog.NewSlogHandler(log.With().Str(logging.FieldComponent, "tsdb").Logger()))
	// Prometheus' encodings and Thanos' AggrChunk, for 5m and 1h blocks.
	pool := aggrchunk.NewPool()
	open := make([]*tsdb.Block, 0, len(dirs))
	defer func() {
		for _, b := range open {
			_ = b.Close()
		}
	}()
	for i, d := range dirs {
		b, err := tsdb.OpenBlock(slogger, d, pool, nil)
		if err != nil {
			return block.Meta{}, badBlockError{job.Inputs[i].ULID, block.NoCompactCorrupt, fmt.Errorf("open: %w", err)}
		}
		open = append(open, b)
	}
	comp, err := tsdb.NewLeveledCompactorWithOptions(ctx, nil, slogger, []int64{job.MaxTime() - job.MinTime()}, pool,
		tsdb.LeveledCompactorOptions{MergeFunc: mergeFunc(job.Deduplication), EnableOverlappingCompaction: true})
	if err != nil {
		return block.Meta{}, fmt.Errorf("job %s: compactor: %w", job.ID, err)
	}
	dest := filepath.Join(dir, "out")
	ids, err := comp.Compact(dest, dirs, open)
	if err != nil {
		return block.Meta{}, w.blame(ctx, job, dirs, err)
	}
	if len(ids) == 0 {
		return block.Meta{}, nil
	}
	final := filepath.Join(dest, out.String())
	if err := os.Rename(filepath.Join(dest, ids[0].String()), final); err != nil {
		return block.Meta{}, fmt.Errorf("job %s: %w", job.ID, err)
	}
	// Thanos never uploads tombstones.
	if err := os.Remove(filepath.Join(final, "tombstones")); err != nil && !os.IsNotExist(err) {
		return block.Meta{}, fmt.Errorf("job %s: %w", job.ID, err)
	}
	meta, err := block.ReadMetaFile(final)
	if err != nil {
		return block.Meta{}, fmt.Errorf("job %s: output: %w", job.ID, err)
	}
	meta.ULID = out
	files, err := block.GatherFiles(final, true)
	if err != nil {
		return block.Meta{}, fmt.Errorf("job %s: output: %w", job.ID, err)
	}
	meta.Thanos = block.Thanos{
		Labels:       job.Labels,
		Downsample:   block.Downsample{Resolution: job.Resolution},
		Source:       block.SourceCompactor,
		Files:        files,
		SegmentFiles: block.SegmentFiles(files),
	}
	// The output must open as any reader will open it.
	b, err := tsdb.OpenBlock(slogger, final, pool, nil)
	if err != nil {
		return block.Meta{}, fmt.Errorf("job %s: the output does not open: %w", job.ID, err)
	}
	if err := b.Close(); err != nil {
		return block.Meta{}, fmt.Errorf("job %s: output: %w", job.ID, err)
	}
	return meta, nil
}

// blame turns a failed compaction into the error to return: a badBlockError when the
// output would break the index limits (on the input with the largest index) or an input
// fails a full read (the compactor's error does not say which block it was reading; the
// read knows raw chunks only); otherwise the error as it is, to retry.
func (w *Worker) blame(ctx context.Context, job schemas.CompactJob, dirs []string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("job %s: compact: %w", job.ID, err)
	}
	if errors.Is(err, index.ErrIndexExceeds64GiB) || errors.Is(err, index.ErrSymbolTableTooLarge) || errors.Is(err, index.ErrPostingsOffsetTableTooLarge) {
		largest, size := 0, int64(-1)
		for i, d := range dirs {
			if fi, serr := os.Stat(filepath.Join(d, block.IndexFilename)); serr == nil && fi.Size() > size {
				largest, size = i, fi.Size()
			}
		}
		return badBlockError{job.Inputs[largest].ULID, block.NoCompactIndexSize, fmt.Errorf("the output would break a TSDB index limit: %w", err)}
	}
	if job.Resolution != schemas.ResRaw {
		// The full read below knows raw chunks only.
		return fmt.Errorf("job %s: compact: %w", job.ID, err)
	}
	for i, d := range dirs {
		meta, merr := block.ReadMetaFile(d)
		if merr == nil {
			merr = upload.Verify(ctx, d, meta)
		}
		if merr != nil {
			return badBlockError{job.Inputs[i].ULID, block.NoCompactCorrupt, fmt.Errorf("compaction failed (%v); the block does not read: %w", err, merr)}
		}
	}
	return fmt.Errorf("job %s: compact: %w", job.ID, err)
}
