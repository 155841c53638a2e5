package block

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// CorruptFileError says a block file cannot be used: its name is not one a block is made
// of, it is missing from the bucket (Err then wraps objstore.ErrNotFound), or its size or
// SHA-256 is not the one expected.
type CorruptFileError struct {
	RelPath string
	Err     error
}

func (e *CorruptFileError) Error() string { return e.RelPath + ": " + e.Err.Error() }
func (e *CorruptFileError) Unwrap() error { return e.Err }

// IsBlockFile reports whether rel is one of the files a block is made of (meta.json,
// index, chunks/NNNNNN), so that a file list cannot make a reader write outside the
// block's directory.
func IsBlockFile(rel string) bool {
	if rel == MetaFilename || rel == IndexFilename {
		return true
	}
	seg, ok := strings.CutPrefix(rel, ChunksDirname+"/")
	return ok && len(seg) == 6 && strings.Trim(seg, "0123456789") == ""
}

// RecordFiles turns a catalogue record's files into thanos.files entries.
func RecordFiles(files []schemas.File) []File {
	out := make([]File, 0, len(files))
	for _, f := range files {
		bf := File{RelPath: f.RelPath, SizeBytes: f.Size}
		if f.SHA256 != "" {
			bf.Hash = &Hash{Func: "SHA256", Value: f.SHA256}
		}
		out = append(out, bf)
	}
	return out
}

// Download fetches files of block id from the bucket into dir, in order, checking each
// file's size when known and its SHA-256 when given. It returns the bytes fetched. A file
// that is not a block file, is missing, or differs from its entry gives a
// *CorruptFileError; any other error may go away on a retry.
func Download(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, files []File, dir string) (int64, error) {
	if err := os.MkdirAll(filepath.Join(dir, ChunksDirname), 0o755); err != nil {
		return 0, err
	}
	var total int64
	for _, f := range files {
		n, err := fetch(ctx, bkt, id, f, dir)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// fetch downloads one file; the bytes it returns count only a complete copy.
func fetch(ctx context.Context, bkt objstore.Bucket, id ulid.ULID, f File, dir string) (int64, error) {
	if !IsBlockFile(f.RelPath) {
		return 0, &CorruptFileError{f.RelPath, errors.New("not a block file")}
	}
	name := id.String() + "/" + f.RelPath
	rc, err := bkt.Get(ctx, name)
	if objstore.IsNotFound(err) {
		return 0, &CorruptFileError{f.RelPath, fmt.Errorf("missing from the bucket: %w", err)}
	}
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", name, err)
	}
	defer rc.Close()
	out, err := os.Create(filepath.Join(dir, filepath.FromSlash(f.RelPath)))
	if err != nil {
		return 0, err
	}
	var (
		h   hash.Hash
		dst io.Writer = out
	)
	if f.Hash != nil && f.Hash.Func == "SHA256" {
		h = sha256.New()
		dst = io.MultiWriter(out, h)
	}
	n, err := io.Copy(dst, rc)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", name, err)
	}
	if f.SizeBytes > 0 && n != f.SizeBytes {
		return n, &CorruptFileError{f.RelPath, fmt.Errorf("has %d bytes, want %d", n, f.SizeBytes)}
	}
	if h != nil {
		if sum := hex.EncodeToString(h.Sum(nil)); sum != f.Hash.Value {
			return n, &CorruptFileError{f.RelPath, fmt.Errorf("has sha256 %s, want %s", sum, f.Hash.Value)}
		}
	}
	return n, nil
}
