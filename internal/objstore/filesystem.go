package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// tempPrefix starts the name of every file an Upload has not finished yet. Such files
// live next to their target (so the final rename stays within one directory) and are
// invisible to every read, so the name is reserved.
const tempPrefix = ".blockflow-tmp-"

// filesystem is a Bucket whose objects are files under a root directory: what `blockflow
// dev` and the tests use, and a layout a Thanos FILESYSTEM bucket can read.
type filesystem struct {
	root string
}

// NewFilesystem returns a bucket stored under dir, creating dir if needed.
func NewFilesystem(dir string) (Bucket, error) {
	if dir == "" {
		return nil, errors.New("filesystem bucket: directory is empty")
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("filesystem bucket %q: %w", dir, err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("filesystem bucket: %w", err)
	}
	return &filesystem{root: root}, nil
}

func (b *filesystem) Name() string { return b.root }

func (b *filesystem) Close() error { return nil }

// checkName rejects names that are not a clean relative path, so no name can reach
// outside the root or alias another name.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty object name")
	}
	for _, elem := range strings.Split(name, "/") {
		switch {
		case elem == "" || elem == "." || elem == "..":
			return fmt.Errorf("invalid object name %q", name)
		case strings.HasPrefix(elem, tempPrefix):
			return fmt.Errorf("object name %q uses the reserved prefix %q", name, tempPrefix)
		}
	}
	return nil
}

// path returns the file path of the object called name.
func (b *filesystem) path(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

// open opens the object's file; a missing file or a directory (a prefix, not an object)
// is ErrNotFound.
func (b *filesystem) open(ctx context.Context, name string) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := b.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("get %q: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("get %q: %w", name, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("get %q: %w", name, ErrNotFound)
	}
	return f, nil
}

// isNotExist also covers ENOTDIR: "a/b" when "a" is an object, not a prefix.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func (b *filesystem) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return b.open(ctx, name)
}

func (b *filesystem) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("get range of %q: negative offset %d", name, off)
	}
	f, err := b.open(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("get range of %q: %w", name, err)
	}
	if length < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, length), f}, nil
}

func (b *filesystem) Exists(ctx context.Context, name string) (bool, error) {
	_, err := b.Size(ctx, name)
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func (b *filesystem) Size(ctx context.Context, name string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p, err := b.path(name)
	if err != nil {
		return 0, err
	}
	st, err := os.Stat(p)
	switch {
	case err != nil && isNotExist(err):
		return 0, fmt.Errorf("stat %q: %w", name, ErrNotFound)
	case err != nil:
		return 0, fmt.Errorf("stat %q: %w", name, err)
	case st.IsDir():
		return 0, fmt.Errorf("stat %q: %w", name, ErrNotFound)
	}
	return st.Size(), nil
}

// Upload writes a temporary file next to the target, syncs it and renames it into place,
// so a reader sees the old object or the whole new one, and a crash leaves no torn object.
func (b *filesystem) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.path(name)
	if err != nil {
		return err
	}
	f, err := createTemp(filepath.Dir(p))
	if err != nil {
		return fmt.Errorf("upload %q: %w", name, err)
	}
	if err := writeAndSync(ctx, f, r, size); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("upload %q: %w", name, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("upload %q: %w", name, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("upload %q: %w", name, err)
	}
	return nil
}

// createTemp creates a temporary file in dir, creating dir first. A concurrent Delete may
// prune dir between the two steps, so a vanished dir is tried again.
func createTemp(dir string) (*os.File, error) {
	var err error
	for range 3 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, tempPrefix+"*")
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// writeAndSync copies r into f, checks the byte count against size (unless -1), syncs
// and closes f.
func writeAndSync(ctx context.Context, f *os.File, r io.Reader, size int64) error {
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("read %d bytes, expected %d", n, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ctxReader stops a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Delete removes the object's file, then every parent directory the removal left empty,
// so deleted blocks leave no empty prefixes behind (S3 has none).
func (b *filesystem) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.path(name)
	if err != nil {
		return err
	}
	st, err := os.Lstat(p)
	switch {
	case err != nil && isNotExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("delete %q: %w", name, err)
	case st.IsDir():
		return nil // a prefix, not an object
	}
	if err := os.Remove(p); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete %q: %w", name, err)
	}
	for dir := filepath.Dir(p); dir != b.root; dir = filepath.Dir(dir) {
		// Fails, as it should, once a directory still holds something.
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func (b *filesystem) Iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error {
	dir = strings.TrimSuffix(dir, "/")
	if dir != "" {
		if err := checkName(dir); err != nil {
			return err
		}
	}
	return b.iter(ctx, dir, recursive, f)
}

func (b *filesystem) iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error {
	names, err := b.list(ctx, dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if recursive && strings.HasSuffix(name, "/") {
			if err := b.iter(ctx, strings.TrimSuffix(name, "/"), true, f); err != nil {
				return err
			}
			continue
		}
		if err := f(name); err != nil {
			return err
		}
	}
	return nil
}

// list returns the entries directly under dir as full object names, directories with a
// trailing "/", in S3's key order (which a directory listing does not give: "a.b" < "a/").
// A missing dir has no entries, as a missing S3 prefix.
func (b *filesystem) list(ctx context.Context, dir string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(b.root, filepath.FromSlash(dir)))
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("iter %q: %w", dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		name := path.Join(dir, e.Name())
		if e.IsDir() {
			name += "/"
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}
