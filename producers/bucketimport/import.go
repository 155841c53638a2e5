// Package bucketimport adopts an existing Thanos bucket: it lists the bucket once (the one
// LIST blockflow makes) and publishes a catalogue record for every complete block the
// catalogue does not know yet, so queryd, the planner and retention take it from there.
package bucketimport

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// Catalogue is where the records go.
type Catalogue interface {
	// Update lets fn change the record (exists is false when there is none) and writes it;
	// an error from fn writes nothing.
	Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error)
}

// Result counts what an import found.
type Result struct {
	Blocks   int // complete blocks (with meta.json) in the bucket
	Imported int // newly catalogued
	Known    int // already in the catalogue, left as they were
	Partial  int // block directories without meta.json, skipped
}

var errKnown = errors.New("already catalogued")

// Run catalogues every complete block of bkt that cat does not know. Records keep an
// empty site, so the planner's consistency delay protects blocks that another writer may
// still be uploading.
func Run(ctx context.Context, bkt objstore.Bucket, cat Catalogue, log zerolog.Logger) (Result, error) {
	var res Result
	var ids []ulid.ULID
	err := bkt.Iter(ctx, "", false, func(name string) error {
		if id, err := ulid.ParseStrict(strings.TrimSuffix(name, "/")); err == nil && strings.HasSuffix(name, "/") {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("list bucket %s: %w", bkt.Name(), err)
	}
	for _, id := range ids {
		meta, err := block.ReadMeta(ctx, bkt, id)
		if objstore.IsNotFound(err) {
			res.Partial++
			continue
		}
		if err != nil {
			return res, err
		}
		res.Blocks++
		var rec schemas.BlockRecord
		_, err = cat.Update(ctx, id, func(cur *schemas.BlockRecord, exists bool) error {
			if exists {
				return errKnown // before reading marks and sizes: a re-run costs one GET per block
			}
			if rec, err = record(ctx, bkt, meta); err != nil {
				return err
			}
			*cur = rec
			return nil
		})
		switch {
		case errors.Is(err, errKnown):
			res.Known++
		case err != nil:
			return res, fmt.Errorf("catalogue %s: %w", id, err)
		default:
			res.Imported++
			log.Info().Str("block", id.String()).Str("state", rec.State).Msg("block imported")
		}
	}
	return res, nil
}

// record builds the catalogue record of a block from its meta.json and marks.
func record(ctx context.Context, bkt objstore.Bucket, meta block.Meta) (schemas.BlockRecord, error) {
	id := meta.ULID
	var err error
	// Blocks from Thanos before v0.17 have no thanos.files; readers need the sizes.
	if missingSizes(meta.Thanos.Files) {
		if meta.Thanos.Files, err = fileSizes(ctx, bkt, id); err != nil {
			return schemas.BlockRecord{}, err
		}
	}
	state := schemas.StateLive
	mark, marked, err := block.ReadDeletionMark(ctx, bkt, id)
	if err != nil {
		return schemas.BlockRecord{}, err
	}
	if marked {
		state = schemas.StateMarked
	}
	rec := meta.Record(state)
	if marked {
		rec.MarkedTime = mark.DeletionTime * 1000
	}
	if rec.UploadTime == 0 {
		rec.UploadTime = int64(id.Time())
	}
	if ok, err := bkt.Exists(ctx, path.Join(id.String(), block.NoCompactMarkFilename)); err != nil {
		return rec, err
	} else if ok {
		rec.NoCompact = block.NoCompactManual
	}
	if ok, err := bkt.Exists(ctx, path.Join(id.String(), block.NoDownsampleMarkFilename)); err != nil {
		return rec, err
	} else if ok {
		rec.NoDownsample = block.NoCompactManual
	}
	return rec, nil
}

func missingSizes(files []block.File) bool {
	if len(files) == 0 {
		return true
	}
	for _, f := range files {
		if f.RelPath != block.MetaFilename && f.SizeBytes == 0 {
			return true
		}
	}
	return false
}

// fileSizes lists a block's objects with their sizes, as thanos.files would have them.
func fileSizes(ctx context.Context, bkt objstore.Bucket, id ulid.ULID) ([]block.File, error) {
	var files []block.File
	err := bkt.Iter(ctx, id.String()+"/", true, func(name string) error {
		rel := strings.TrimPrefix(name, id.String()+"/")
		if rel != block.IndexFilename && !strings.HasPrefix(rel, block.ChunksDirname+"/") {
			return nil
		}
		size, err := bkt.Size(ctx, name)
		if err != nil {
			return err
		}
		files = append(files, block.File{RelPath: rel, SizeBytes: size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", id, err)
	}
	return append(files, block.File{RelPath: block.MetaFilename}), nil
}
