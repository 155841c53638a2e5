package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// QueuedJobs returns the data of every job of kind still in the JOBS work queue, oldest
// first: jobs waiting for a worker and jobs being worked on. A job leaves the queue only
// when a worker acks it or dead-letters it, so this is the set a planner must not plan
// against, whoever published it.
func (b *Bus) QueuedJobs(ctx context.Context, kind string) ([][]byte, error) {
	var out [][]byte
	err := b.scan(ctx, StreamJobs, b.JobFilter(kind), func(m *jetstream.RawStreamMsg) {
		out = append(out, m.Data)
	})
	return out, err
}

// scan calls f for every message of stream on filter, oldest first, with direct gets:
// no consumer is created for a one-off read.
func (b *Bus) scan(ctx context.Context, stream, filter string, f func(*jetstream.RawStreamMsg)) error {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", stream, err)
	}
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s from seq %d: %w", filter, seq, err)
		}
		f(m)
		seq = m.Sequence + 1
	}
}
