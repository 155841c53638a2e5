// Package stage holds what every pipeline stage and the bus agree on without either
// importing the other: the handler signature, the "never retry" marker, and the sentinel
// for a missing staged object or catalogue key. It imports nothing but the standard library.
package stage

import (
	"context"
	"errors"
)

// Handler is a stage: it gets one decoded, valid event and returns nil when the effect is
// durable. An error wrapped by Permanent dead-letters the event; any other error retries it.
type Handler[E any] func(ctx context.Context, ev E) error

// ErrNotFound is wrapped by the bus's staging Get and catalogue Get when the object or key
// does not exist, so a stage can tell "gone" from "unreachable".
var ErrNotFound = errors.New("not found")

// IsNotFound reports whether err means the staged object or catalogue key does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as one that no retry can fix: the event goes to the DLQ with err as the reason.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err (or an error it wraps) was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}
