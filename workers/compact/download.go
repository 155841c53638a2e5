package compact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// blockFile admits the files the compactor reads, so a record cannot make the worker
// write outside a block's directory.
var blockFile = regexp.MustCompile(`^(meta\.json|index|chunks/[0-9]{6})$`)

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
	if err := os.MkdirAll(filepath.Join(bdir, block.ChunksDirname), 0o755); err != nil {
		return err
	}
	files, err := w.blockFiles(ctx, rec)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := w.fetch(ctx, rec, bdir, f); err != nil {
			return err
		}
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
func (w *Worker) blockFiles(ctx context.Context, rec schemas.BlockRecord) ([]schemas.File, error) {
	var files []schemas.File
	hasMeta := false
	for _, f := range rec.Files {
		if blockFile.MatchString(f.RelPath) {
			files = append(files, f)
			hasMeta = hasMeta || f.RelPath == block.MetaFilename
		}
	}
	if len(files) > 0 {
		if !hasMeta {
			files = append(files, schemas.File{RelPath: block.MetaFilename})
		}
		return files, nil
	}
	prefix := rec.ULID.String() + "/"
	err := w.o.Bucket.Iter(ctx, prefix, true, func(name string) error {
		if rel := strings.TrimPrefix(name, prefix); blockFile.MatchString(rel) {
			files = append(files, schemas.File{RelPath: rel})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list block %s: %w", rec.ULID, err)
	}
	return files, nil
}

// fetch downloads one file of rec into bdir, checking its size and hash when known.
func (w *Worker) fetch(ctx context.Context, rec schemas.BlockRecord, bdir string, f schemas.File) error {
	name := rec.ULID.String() + "/" + f.RelPath
	rc, err := w.o.Bucket.Get(ctx, name)
	if objstore.IsNotFound(err) {
		return badBlockError{rec.ULID, block.NoCompactCorrupt, fmt.Errorf("%s is missing from the bucket", f.RelPath)}
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	out, err := os.Create(filepath.Join(bdir, filepath.FromSlash(f.RelPath)))
	if err != nil {
		return err
	}
	var (
		h   hash.Hash
		dst io.Writer = out
	)
	if f.SHA256 != "" {
		h = sha256.New()
		dst = io.MultiWriter(out, h)
	}
	n, err := io.Copy(dst, rc)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("download %s: %w", name, err)
	}
	w.o.Metrics.addBytes("downloaded", n)
	switch {
	case f.Size > 0 && n != f.Size:
		return badBlockError{rec.ULID, block.NoCompactCorrupt, fmt.Errorf("%s has %d bytes, the catalogue says %d", f.RelPath, n, f.Size)}
	case h != nil && hex.EncodeToString(h.Sum(nil)) != f.SHA256:
		return badBlockError{rec.ULID, block.NoCompactCorrupt, fmt.Errorf("%s has sha256 %x, the catalogue says %s", f.RelPath, h.Sum(nil), f.SHA256)}
	}
	return nil
}
