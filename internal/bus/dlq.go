package bus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Headers of a dead letter.
const (
	headerReason        = "Blockflow-Reason"
	headerStage         = "Blockflow-Stage"
	headerOriginSubject = "Blockflow-Origin-Subject"
	headerOriginSeq     = "Blockflow-Origin-Seq"
	headerDeliveries    = "Blockflow-Deliveries"
)

// deadLetter copies the event to the DLQ and, once that copy is stored, terminates it with
// the reason. If the copy fails the event is redelivered later and the copy tried again;
// the message id dlq:<stage>:<seq> keeps a second copy out.
func (s *runner[E]) deadLetter(ctx context.Context, msg jetstream.Msg, md *jetstream.MsgMetadata, lease *lease, log zerolog.Logger, reason string) {
	reason = headerSafe(reason)
	stage := SubjectToken(s.spec.Durable)
	dl := nats.NewMsg(s.bus.Subject("dlq", stage, lastToken(msg.Subject())))
	dl.Data = msg.Data()
	dl.Header.Set(headerReason, reason)
	dl.Header.Set(headerStage, s.spec.Durable)
	dl.Header.Set(headerOriginSubject, msg.Subject())
	dl.Header.Set(headerOriginSeq, strconv.FormatUint(md.Sequence.Stream, 10))
	dl.Header.Set(headerDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("dlq:%s:%d", stage, md.Sequence.Stream))

	pctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	if err := s.bus.publish(pctx, dl); err != nil {
		delay := retryDelay(s.spec.Backoff, md.NumDelivered)
		if delay == backoff.Stop {
			delay = deadLetterTimeout
		}
		s.nak(msg, delay, lease, log.Error().Err(err).Str("reason", reason), "dead-lettering failed, will retry")
		return
	}
	lease.stop()
	s.metrics.deadLetter.Inc()
	ev := log.Error().Str("reason", reason)
	if err := msg.TermWithReason(reason); err != nil {
		// The copy is in the DLQ; a redelivery is dead-lettered again and deduplicated.
		ev = ev.AnErr("term_error", err)
	}
	ev.Msg("event dead-lettered")
}

// headerSafe makes s one short header line.
func headerSafe(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxReasonLen {
		s = strings.ToValidUTF8(s[:maxReasonLen], "")
	}
	return s
}

// DeadLetter is one event a stage gave up on.
type DeadLetter struct {
	// Seq and Subject locate the copy in the DLQ stream.
	Seq     uint64
	Subject string
	Time    time.Time
	Stage   string
	Reason  string
	// OriginSubject and OriginSeq locate the original event (in EVENTS or JOBS).
	OriginSubject string
	OriginSeq     uint64
	// Deliveries is how many times the stage had received the event.
	Deliveries uint64
	// Data is the event as it was published.
	Data []byte
}

// DeadLetters returns every dead letter of stage still in the DLQ, oldest first; an empty
// stage means every stage.
func (b *Bus) DeadLetters(ctx context.Context, stage string) ([]DeadLetter, error) {
	filter := b.Subject("dlq", ">")
	if stage != "" {
		filter = b.Subject("dlq", SubjectToken(stage), ">")
	}
	var out []DeadLetter
	err := b.scan(ctx, StreamDLQ, filter, func(m *jetstream.RawStreamMsg) {
		originSeq, _ := strconv.ParseUint(m.Header.Get(headerOriginSeq), 10, 64)
		deliveries, _ := strconv.ParseUint(m.Header.Get(headerDeliveries), 10, 64)
		out = append(out, DeadLetter{
			Seq:           m.Sequence,
			Subject:       m.Subject,
			Time:          m.Time,
			Stage:         m.Header.Get(headerStage),
			Reason:        m.Header.Get(headerReason),
			OriginSubject: m.Header.Get(headerOriginSubject),
			OriginSeq:     originSeq,
			Deliveries:    deliveries,
			Data:          m.Data,
		})
	})
	return out, err
}
