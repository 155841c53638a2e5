package compact

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// downloadConcurrency is how many input blocks are fetched at once: object stores
// serve parallel reads well, and a compaction waits for all of its inputs.
const downloadConcurrency = 4

// download fetches each input's meta.json, index and chunk segments into dir/<ulid> and
// returns the directories in the order of inputs. A missing file, or one whose size or
// SHA-256 differs from the catalogue's, is a badBlockError.
func (w *Worker) download(ctx context.Context, dir string, inputs []schemas.BlockRecord) ([]string, error) {
	dirs := make([]string, len(inputs))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(downloadConcurrency)
	for i, rec := range inputs {
		g.Go(func() error {
			bdir := filepath.Join(dir, rec.ULID.String())
			if err := w.downloadBlock(ctx, rec, bdir); err != nil {
				return err
			}
			dirs[i] = bdir
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return dirs, nil
}

func (w *Worker) downloadBlock(ctx context.Context, rec schemas.BlockRecord, bdir string) error {
	files, err := w.blockFiles(ctx, rec)
	if err != nil {
		return err
	}
	n, err := block.Download(ctx, w.o.Bucket, rec.ULID, files, bdir)
	w.o.Metrics.addBytes("downloaded", n)
	var corrupt *block.CorruptFileError
	if errors.As(err, &corrupt) {
		return badBlockError{rec.ULID, block.NoCompactCorrupt, err}
	}
	if err != nil {
		return err
	}
	meta, err := block.ReadMetaFile(bdir)
	if err != nil {
		return badBlockError{rec.ULID, block.NoCompactCorrupt, err}
	}
	if meta.ULID != rec.ULID {
		return badBlockError{rec.ULID, block.NoCompactCorrupt, fmt.Errorf("meta.json names block %s", meta.ULID)}
	}
	return nil
}

// blockFiles are the files to fetch: those the catalogue lists, or for a block uploaded
// before Thanos listed files in meta.json, those the bucket holds.
func (w *Worker) blockFiles(ctx context.Context, rec schemas.BlockRecord) ([]block.File, error) {
	var files []schemas.File
	hasMeta := false
	for _, f := range rec.Files {
		if block.IsBlockFile(f.RelPath) {
			files = append(files, f)
			hasMeta = hasMeta || f.RelPath == block.MetaFilename
		}
	}
	if len(files) > 0 {
		if !hasMeta {
			files = append(files, schemas.File{RelPath: block.MetaFilename})
		}
		return block.RecordFiles(files), nil
	}
	prefix := rec.ULID.String() + "/"
	err := w.o.Bucket.Iter(ctx, prefix, true, func(name string) error {
		if rel := strings.TrimPrefix(name, prefix); block.IsBlockFile(rel) {
			files = append(files, schemas.File{RelPath: rel})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list block %s: %w", rec.ULID, err)
	}
	return block.RecordFiles(files), nil
}
