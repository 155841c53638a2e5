package objstore

import (
	"context"
	"io"
	"strings"
)

// prefixed keeps every object under a fixed prefix of another bucket, as the Thanos
// objstore `prefix:` setting does, so several systems can share one bucket.
type prefixed struct {
	bkt    Bucket
	prefix string // without surrounding "/"
}

// WithPrefix returns bkt seen from prefix; an empty prefix returns bkt itself.
func WithPrefix(bkt Bucket, prefix string) Bucket {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return bkt
	}
	return &prefixed{bkt: bkt, prefix: prefix}
}

func (b *prefixed) full(name string) string { return b.prefix + "/" + name }

func (b *prefixed) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return b.bkt.Get(ctx, b.full(name))
}

func (b *prefixed) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	return b.bkt.GetRange(ctx, b.full(name), off, length)
}

func (b *prefixed) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	return b.bkt.Upload(ctx, b.full(name), r, size)
}

func (b *prefixed) Exists(ctx context.Context, name string) (bool, error) {
	return b.bkt.Exists(ctx, b.full(name))
}

func (b *prefixed) Delete(ctx context.Context, name string) error {
	return b.bkt.Delete(ctx, b.full(name))
}

func (b *prefixed) Size(ctx context.Context, name string) (int64, error) {
	return b.bkt.Size(ctx, b.full(name))
}

func (b *prefixed) Iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error {
	return b.bkt.Iter(ctx, b.full(dir), recursive, func(name string) error {
		return f(strings.TrimPrefix(name, b.prefix+"/"))
	})
}

func (b *prefixed) Name() string { return b.bkt.Name() }

func (b *prefixed) Close() error { return b.bkt.Close() }
