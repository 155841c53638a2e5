// Package stage holds what every pipeline stage and the bus agree on without either
// importing the other: the handler signature, the "never retry" marker, the sentinel
// for a missing staged object or catalogue key, and the guard against working on one event
// twice at once. It imports nothing but the standard library.
package stage

import (
	"context"
	"errors"
	"sync"
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

// InFlight is the set of keys a process is working on, so that two deliveries of one event
// do not share a work directory. The zero value is an empty set.
type InFlight[K comparable] struct {
	mu   sync.Mutex
	keys map[K]struct{}
}

// Claim adds k and reports whether it was absent: false means k is already being worked on.
func (s *InFlight[K]) Claim(k K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.keys[k]; ok {
		return false
	}
	if s.keys == nil {
		s.keys = make(map[K]struct{})
	}
	s.keys[k] = struct{}{}
	return true
}

// Release removes k.
func (s *InFlight[K]) Release(k K) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, k)
}
