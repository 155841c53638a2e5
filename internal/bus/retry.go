package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// attemptTimeout bounds one request to the server inside a retry loop, so a request lost in
// a leader election or a reconnect is retried instead of waiting for the caller's deadline.
// Retried publishes are safe: every publish carries a Nats-Msg-Id.
const attemptTimeout = 3 * time.Second

// JetStream error codes that mean "try again shortly" (see nats-server errors.json).
const (
	errCodeClusterNoPeers  = 10005 // no suitable peers for placement: peers not all known yet
	errCodeClusterNotAvail = 10008
)

// retrySchedule is the backoff for talking to the server: fast at first, capped at 5s,
// unbounded in time (the caller's context ends it).
func retrySchedule() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}

// isTransient reports whether a request failed for a reason that goes away by itself:
// a timeout, no responders while a stream or meta leader is elected, a reconnect.
func isTransient(err error) bool {
	switch {
	case errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrConsumerLeadershipChanged),
		errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == errCodeClusterNoPeers || apiErr.ErrorCode == errCodeClusterNotAvail
	}
	return false
}

// retryTransient runs op until it succeeds, fails for a reason that is not transient, or ctx
// ends. Each attempt gets its own attemptTimeout.
func (b *Bus) retryTransient(ctx context.Context, what string, op func(ctx context.Context) error) error {
	var last error
	attempt := func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		err := op(actx)
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil || !isTransient(err) {
			return backoff.Permanent(err)
		}
		return err
	}
	notify := func(err error, d time.Duration) {
		b.log.Warn().Err(err).Dur("retry_in", d).Msgf("%s failed, retrying", what)
	}
	err := backoff.RetryNotify(attempt, backoff.WithContext(retrySchedule(), ctx), notify)
	if err == nil {
		return nil
	}
	if last != nil && !errors.Is(err, last) {
		return fmt.Errorf("%s: %w (last error: %v)", what, err, last)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// sleep waits for d or until ctx ends; it reports whether the full wait elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
