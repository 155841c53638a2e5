package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumer finds a stage's durable consumer on EVENTS or, failing that, on JOBS.
func (b *Bus) consumer(ctx context.Context, durable string) (jetstream.Consumer, error) {
	for _, stream := range []string{StreamEvents, StreamJobs} {
		c, err := b.js.Consumer(ctx, stream, durable)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("look up consumer %s on %s: %w", durable, stream, err)
		}
	}
	return nil, fmt.Errorf("consumer %s: %w", durable, jetstream.ErrConsumerNotFound)
}

// Pending is a stage's backlog: events not yet delivered plus events delivered and not yet
// acked (in a handler, or waiting for a retry).
func (b *Bus) Pending(ctx context.Context, durable string) (uint64, error) {
	c, err := b.consumer(ctx, durable)
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s info: %w", durable, err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// ReplayFromSequence rewinds a stage so it handles every event of its filter from stream
// sequence seq on again, while its workers keep running. Handlers must be idempotent, as
// they are anyway. Meaningful on EVENTS; a JOBS work queue keeps no handled jobs.
func (b *Bus) ReplayFromSequence(ctx context.Context, durable string, seq uint64) error {
	c, err := b.consumer(ctx, durable)
	if err != nil {
		return err
	}
	stream := c.CachedInfo().Stream
	if _, err := b.js.ResetConsumerToSequence(ctx, stream, durable, seq); err != nil {
		return fmt.Errorf("reset consumer %s on %s to seq %d: %w", durable, stream, seq, err)
	}
	b.log.Info().Str("stage", durable).Uint64("seq", seq).Msg("stage rewound")
	return nil
}

// ReplayFromTime rewinds a stage to the first event stored at or after t and returns that
// event's stream sequence (one past the last event when there is none).
func (b *Bus) ReplayFromTime(ctx context.Context, durable string, t time.Time) (uint64, error) {
	c, err := b.consumer(ctx, durable)
	if err != nil {
		return 0, err
	}
	stream := c.CachedInfo().Stream
	// A throw-away consumer starting at t tells which sequence that is.
	probe, err := b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &t,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return 0, fmt.Errorf("find the first event after %s on %s: %w", t.Format(time.RFC3339), stream, err)
	}
	seq := probe.CachedInfo().Delivered.Stream + 1
	if err := b.js.DeleteConsumer(ctx, stream, probe.CachedInfo().Name); err != nil {
		b.log.Warn().Err(err).Msg("deleting the replay probe consumer failed; it expires by itself")
	}
	return seq, b.ReplayFromSequence(ctx, durable, seq)
}
