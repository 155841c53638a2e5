// Package objstore is the only storage surface blockflow's stages see: a small Bucket
// interface with an S3 implementation (minio-go; the only importer of it) and a local
// directory implementation, configured by the Thanos objstore YAML.
package objstore

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound is wrapped by every error that means "no such object".
var ErrNotFound = errors.New("object not found")

// IsNotFound reports whether err means the object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// Bucket is a flat namespace of objects with "/"-separated names.
type Bucket interface {
	// Get returns the whole object; a missing object gives an error wrapping ErrNotFound.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// GetRange returns length bytes from off (length < 0: to the end).
	GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error)
	// Upload writes the object atomically: readers see the old object or the whole new one.
	// size is the byte count of r, or -1 when unknown.
	Upload(ctx context.Context, name string, r io.Reader, size int64) error
	Exists(ctx context.Context, name string) (bool, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// Iter calls f for each entry directly under dir ("" is the root). Entries that are
	// prefixes of further objects end with "/". With recursive set it calls f for every
	// object below dir instead, and never for a prefix. Used only by bucket import, verify
	// and block deletion: steady-state discovery goes through the catalogue.
	Iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error
	// Size returns the object's size in bytes.
	Size(ctx context.Context, name string) (int64, error)
	// Name names the bucket for logs and metrics (never a credential).
	Name() string
	Close() error
}
