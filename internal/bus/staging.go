package bus

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blockflow/blockflow/internal/stage"
)

// ErrNotFound is wrapped by Staging.Get and Info for a missing object and by Catalogue.Get
// for a missing record (stage.ErrNotFound, so stages can test for it without the bus).
var ErrNotFound = stage.ErrNotFound

// Staging holds new blocks' files between a producer and the upload workers, in a
// JetStream object store. Names are "<site>/<ulid>/<rel path>".
type Staging struct {
	obj jetstream.ObjectStore
}

// Put stores r under name, replacing any object of that name.
func (s *Staging) Put(ctx context.Context, name string, r io.Reader) error {
	if _, err := s.obj.Put(ctx, jetstream.ObjectMeta{Name: name}, r); err != nil {
		return fmt.Errorf("stage %s: %w", name, err)
	}
	return nil
}

// Get opens the object; the reader fails at the end if the content does not match its
// digest. The caller closes it.
func (s *Staging) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := s.obj.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("staged object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get staged object %s: %w", name, err)
	}
	return r, nil
}

// Info returns the object's size.
func (s *Staging) Info(ctx context.Context, name string) (int64, error) {
	info, err := s.obj.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, fmt.Errorf("staged object %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("stat staged object %s: %w", name, err)
	}
	return int64(info.Size), nil
}

// Delete removes the object; a missing object is not an error.
func (s *Staging) Delete(ctx context.Context, name string) error {
	err := s.obj.Delete(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete staged object %s: %w", name, err)
	}
	return nil
}
