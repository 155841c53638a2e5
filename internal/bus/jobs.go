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
	stream, err := b.js.Stream(ctx, StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", StreamJobs, err)
	}
	filter := b.JobFilter(kind)
	var out [][]byte
	for seq := uint64(1); ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s from seq %d: %w", filter, seq, err)
		}
		out = append(out, m.Data)
		seq = m.Sequence + 1
	}
}
