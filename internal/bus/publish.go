package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
)

// PublishBlockEvent publishes v as JSON on <prefix>.block.<event>.<site>.<ulid> and waits
// until the stream has stored it. The message id <event>:<site>:<ulid> makes a repeat
// within an hour a no-op, so callers may simply retry. Transient failures (timeouts, no
// stream leader, reconnects) are retried until ctx ends: give it a deadline.
func (b *Bus) PublishBlockEvent(ctx context.Context, event, site string, id ulid.ULID, v any) error {
	event, site = SubjectToken(event), SubjectToken(site)
	msg, err := jsonMsg(b.Subject("block", event, site, id.String()), v)
	if err != nil {
		return err
	}
	msg.Header.Set(jetstream.MsgIDHeader, event+":"+site+":"+id.String())
	return b.publish(ctx, msg)
}

// PublishJob publishes v as JSON on <prefix>.job.<kind>.<group> with jobID as the message
// id, so a planner that emits the same job twice within an hour queues it once.
func (b *Bus) PublishJob(ctx context.Context, kind, group, jobID string, v any) error {
	if jobID == "" {
		return errors.New("publish job: empty job id")
	}
	msg, err := jsonMsg(b.Subject("job", SubjectToken(kind), SubjectToken(group)), v)
	if err != nil {
		return err
	}
	msg.Header.Set(jetstream.MsgIDHeader, jobID)
	return b.publish(ctx, msg)
}

func jsonMsg(subject string, v any) (*nats.Msg, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T for %s: %w", v, subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	return msg, nil
}

// publish sends msg and waits for the stream's ack, retrying transient failures.
func (b *Bus) publish(ctx context.Context, msg *nats.Msg) error {
	var ack *jetstream.PubAck
	err := b.retryTransient(ctx, "publish "+msg.Subject, func(ctx context.Context) (err error) {
		ack, err = b.js.PublishMsg(ctx, msg)
		return err
	})
	if err != nil {
		return err
	}
	b.log.Debug().Str("subject", msg.Subject).Str("stream", ack.Stream).Uint64("seq", ack.Sequence).
		Bool("duplicate", ack.Duplicate).Msg("published")
	return nil
}
