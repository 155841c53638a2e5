// Package upload is the upload stage: for each block.ready event it fetches the staged
// files, verifies the block (sizes, hashes, meta.json, a full pass over the index and every
// chunk), adds the Thanos section to meta.json, writes the block to the bucket with
// meta.json last, records it in the catalogue as live and publishes block.uploaded.
package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

// Staging is where producers leave block files, under "<site>/<ulid>/<rel path>".
type Staging interface {
	// Get returns the object; a missing one gives an error wrapping stage.ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
}

// Catalogue holds one record per block.
type Catalogue interface {
	Put(ctx context.Context, rec schemas.BlockRecord) error
	// Get returns the record and its revision; a missing one gives an error wrapping
	// stage.ErrNotFound.
	Get(ctx context.Context, id ulid.ULID) (schemas.BlockRecord, uint64, error)
}

// Publisher publishes an event about one block.
type Publisher interface {
	PublishBlockEvent(ctx context.Context, event, site string, id ulid.ULID, v any) error
}

// Worker handles block.ready events. Handle may run concurrently for different blocks.
type Worker struct {
	Bucket    objstore.Bucket
	Staging   Staging
	Catalogue Catalogue
	Publisher Publisher
	// DataDir holds the blocks being uploaded, under DataDir/upload/<ulid>.
	DataDir string
	Logger  zerolog.Logger
	Metrics *Metrics // nil: none

	inflight stage.InFlight[ulid.ULID]
}

// Results of one event, the result label of blockflow_upload_blocks_total.
const (
	resultUploaded  = "uploaded"
	resultDuplicate = "duplicate" // already in the bucket: a redelivery after a crash
	resultInvalid   = "invalid"   // dead-lettered
	resultError     = "error"     // retried
)

// Handle uploads the block ev announces. It returns nil once the block is in the bucket,
// in the catalogue and announced, and its staged files are gone; an error marked by
// stage.Permanent when the event or the block can never be uploaded; any other error
// when a retry may succeed.
func (w *Worker) Handle(ctx context.Context, ev schemas.BlockReady) (err error) {
	start := time.Now()
	log := w.Logger.With().Str(logging.FieldStage, "upload").Str(logging.FieldSite, ev.Site).
		Str(logging.FieldBlock, ev.ULID.String()).Logger()
	result := resultUploaded
	defer func() {
		switch {
		case err == nil:
		case stage.IsPermanent(err):
			result = resultInvalid
			log.Error().Err(err).Msg("block rejected")
		default:
			result = resultError
			log.Warn().Err(err).Msg("upload failed; will retry")
		}
		w.Metrics.observe(result, time.Since(start))
	}()

	if err := checkEvent(ev); err != nil {
		return stage.Permanent(fmt.Errorf("block %s: invalid block.ready: %w", ev.ULID, err))
	}
	if !w.inflight.Claim(ev.ULID) {
		return fmt.Errorf("block %s: already being uploaded by this worker", ev.ULID)
	}
	defer w.inflight.Release(ev.ULID)

	// A previous attempt may have committed the block and died before the ack.
	if ok, err := w.Bucket.Exists(ctx, path.Join(ev.ULID.String(), block.MetaFilename)); err != nil {
		return fmt.Errorf("block %s: check bucket: %w", ev.ULID, err)
	} else if ok {
		result = resultDuplicate
		return w.finishCommitted(ctx, ev, log)
	}

	dir := filepath.Join(w.DataDir, "upload", ev.ULID.String())
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("block %s: clean %s: %w", ev.ULID, dir, err)
	}
	defer os.RemoveAll(dir)
	if err := w.download(ctx, ev, dir); err != nil {
		return err
	}
	meta, err := readMeta(ev, dir)
	if err != nil {
		return err
	}
	if err := Verify(ctx, dir, meta); err != nil {
		return stage.Permanent(fmt.Errorf("block %s: corrupt: %w", ev.ULID, err))
	}

	meta.Thanos.Labels = ev.Labels
	meta.Thanos.Downsample = block.Downsample{Resolution: schemas.ResRaw}
	meta.Thanos.Source = sourceOf(ev.Producer)
	meta.Thanos.Files = thanosFiles(ev.Files)
	meta.Thanos.SegmentFiles = block.SegmentFiles(meta.Thanos.Files)
	written, err := block.Upload(ctx, w.Bucket, dir, meta)
	if err != nil {
		return fmt.Errorf("block %s: %w", ev.ULID, err)
	}
	w.Metrics.addBytes(eventBytes(ev))

	rec := written.Record(schemas.StateLive)
	rec.Site = ev.Site
	if err := w.Catalogue.Put(ctx, rec); err != nil {
		return fmt.Errorf("block %s: catalogue: %w", ev.ULID, err)
	}
	if err := w.announce(ctx, ev, rec); err != nil {
		return err
	}
	if err := w.deleteStaged(ctx, ev); err != nil {
		return err
	}
	log.Info().Int64("bytes", eventBytes(ev)).Dur("took", time.Since(start)).Msg("block uploaded")
	return nil
}

// finishCommitted completes what a crashed attempt left undone after writing meta.json:
// the catalogue record, the event, the staged files. Each step is idempotent.
func (w *Worker) finishCommitted(ctx context.Context, ev schemas.BlockReady, log zerolog.Logger) error {
	rec, _, err := w.Catalogue.Get(ctx, ev.ULID)
	switch {
	case stage.IsNotFound(err):
		meta, err := block.ReadMeta(ctx, w.Bucket, ev.ULID)
		if err != nil {
			return fmt.Errorf("block %s: read committed meta.json: %w", ev.ULID, err)
		}
		rec = meta.Record(schemas.StateLive)
		rec.Site = ev.Site
		if err := w.Catalogue.Put(ctx, rec); err != nil {
			return fmt.Errorf("block %s: catalogue: %w", ev.ULID, err)
		}
	case err != nil:
		return fmt.Errorf("block %s: catalogue: %w", ev.ULID, err)
	}
	// The bus deduplicates by Nats-Msg-Id, so announcing twice is harmless.
	if err := w.announce(ctx, ev, rec); err != nil {
		return err
	}
	if err := w.deleteStaged(ctx, ev); err != nil {
		return err
	}
	log.Info().Msg("block was already uploaded; finished its bookkeeping")
	return nil
}

func (w *Worker) announce(ctx context.Context, ev schemas.BlockReady, rec schemas.BlockRecord) error {
	up := schemas.BlockUploaded{Version: schemas.Version, Record: rec}
	if err := w.Publisher.PublishBlockEvent(ctx, schemas.EventUploaded, ev.Site, ev.ULID, up); err != nil {
		return fmt.Errorf("block %s: publish %s: %w", ev.ULID, schemas.EventUploaded, err)
	}
	return nil
}

func (w *Worker) deleteStaged(ctx context.Context, ev schemas.BlockReady) error {
	for _, f := range ev.Files {
		name := schemas.StagedName(ev.Site, ev.ULID, f.RelPath)
		if err := w.Staging.Delete(ctx, name); err != nil {
			return fmt.Errorf("block %s: delete staged %s: %w", ev.ULID, name, err)
		}
	}
	return nil
}

// download fetches every staged file into dir, checking its size and hash on the way.
func (w *Worker) download(ctx context.Context, ev schemas.BlockReady, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, block.ChunksDirname), 0o755); err != nil {
		return fmt.Errorf("block %s: %w", ev.ULID, err)
	}
	for _, f := range ev.Files {
		if err := w.fetch(ctx, ev, dir, f); err != nil {
			return err
		}
	}
	return nil
}

func (w *Worker) fetch(ctx context.Context, ev schemas.BlockReady, dir string, f schemas.File) error {
	name := schemas.StagedName(ev.Site, ev.ULID, f.RelPath)
	rc, err := w.Staging.Get(ctx, name)
	if stage.IsNotFound(err) {
		return stage.Permanent(fmt.Errorf("block %s: staged file %s missing", ev.ULID, name))
	}
	if err != nil {
		return fmt.Errorf("block %s: get staged %s: %w", ev.ULID, name, err)
	}
	defer rc.Close()
	out, err := os.Create(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
	if err != nil {
		return fmt.Errorf("block %s: %w", ev.ULID, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), rc)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("block %s: download %s: %w", ev.ULID, name, err)
	}
	if n != f.Size {
		return stage.Permanent(fmt.Errorf("block %s: staged file %s has %d bytes, event says %d", ev.ULID, name, n, f.Size))
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 {
		return stage.Permanent(fmt.Errorf("block %s: staged file %s has sha256 %s, event says %s", ev.ULID, name, sum, f.SHA256))
	}
	return nil
}

// readMeta reads the downloaded meta.json and checks it describes the event's block.
func readMeta(ev schemas.BlockReady, dir string) (block.Meta, error) {
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		return meta, stage.Permanent(fmt.Errorf("block %s: %w", ev.ULID, err))
	}
	switch {
	case meta.ULID != ev.ULID:
		err = fmt.Errorf("meta.json names block %s", meta.ULID)
	case meta.MinTime != ev.MinTime || meta.MaxTime != ev.MaxTime:
		err = fmt.Errorf("meta.json time range [%d, %d) differs from the event's [%d, %d)",
			meta.MinTime, meta.MaxTime, ev.MinTime, ev.MaxTime)
	}
	if err != nil {
		return meta, stage.Permanent(fmt.Errorf("block %s: %w", ev.ULID, err))
	}
	return meta, nil
}

// checkEvent adds to ev.Validate what the worker relies on: known file names, each once,
// with hashes, and a known producer.
func checkEvent(ev schemas.BlockReady) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	if sourceOf(ev.Producer) == "" {
		return fmt.Errorf("unknown producer %q", ev.Producer)
	}
	seen := make(map[string]bool, len(ev.Files))
	for _, f := range ev.Files {
		switch {
		case !block.IsBlockFile(f.RelPath):
			return fmt.Errorf("unexpected file %q", f.RelPath)
		case seen[f.RelPath]:
			return fmt.Errorf("file %q listed twice", f.RelPath)
		case f.SHA256 == "":
			return fmt.Errorf("file %q has no sha256", f.RelPath)
		}
		seen[f.RelPath] = true
	}
	return nil
}

func sourceOf(producer string) string {
	switch producer {
	case schemas.ProducerSidecar:
		return block.SourceSidecar
	case schemas.ProducerBackfill:
		return block.SourceBucketUpload
	}
	return ""
}

// thanosFiles turns the event's files into thanos.files: sorted (as the event is, but
// sort anyway), with sizes and SHA256 hashes, and a meta.json entry without either since
// meta.json is rewritten on upload.
func thanosFiles(files []schemas.File) []block.File {
	out := make([]block.File, 0, len(files))
	for _, f := range files {
		if f.RelPath == block.MetaFilename {
			out = append(out, block.File{RelPath: f.RelPath})
			continue
		}
		out = append(out, block.File{RelPath: f.RelPath, SizeBytes: f.Size, Hash: &block.Hash{Func: "SHA256", Value: f.SHA256}})
	}
	slices.SortFunc(out, func(a, b block.File) int { return strings.Compare(a.RelPath, b.RelPath) })
	return out
}

func eventBytes(ev schemas.BlockReady) int64 {
	var n int64
	for _, f := range ev.Files {
		n += f.Size
	}
	return n
}
