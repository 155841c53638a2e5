package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/schemas"
)

const (
	// fetchWait is how long one pull request waits for an event. It bounds how long Run
	// takes to notice that its context ended.
	fetchWait = 2 * time.Second
	// maxAckPending is the consumer's in-flight limit across the pool. Events waiting out a
	// NakWithDelay count against it (nats-server #6093), so it is far above the slots.
	maxAckPending = 1000
	// settleTimeout bounds an ack, and deadLetterTimeout the copy to the DLQ.
	settleTimeout     = 10 * time.Second
	deadLetterTimeout = time.Minute
	// maxReasonLen keeps a dead-letter reason short enough for a header.
	maxReasonLen = 1024
)

// Defaults of ConsumerSpec.
const (
	DefaultAckWait  = 30 * time.Second
	DefaultAttempts = 20
)

// DefaultBackoff is the retry schedule of a failed event: 1s, 2s, 4s, ... up to 5m, with
// jitter.
func DefaultBackoff() backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(time.Second),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(5*time.Minute),
		backoff.WithMaxElapsedTime(0),
	)
}

func (s ConsumerSpec) withDefaults() (ConsumerSpec, error) {
	if s.Stream == "" || s.Durable == "" {
		return s, errors.New("consumer spec needs a stream and a durable name")
	}
	if s.Slots <= 0 {
		s.Slots = 1
	}
	switch {
	case s.AckWait == 0:
		s.AckWait = DefaultAckWait
	case s.AckWait < time.Second:
		return s, fmt.Errorf("consumer %s: AckWait %s is below 1s", s.Durable, s.AckWait)
	}
	if s.Attempts <= 0 {
		s.Attempts = DefaultAttempts
	}
	if s.Backoff == nil {
		s.Backoff = DefaultBackoff
	}
	return s, nil
}

// Run makes this process part of a stage's pool: it creates or updates the durable pull
// consumer spec.Durable and handles events with spec.Slots workers, each pulling one event
// at a time (no prefetch, so no lease expires in a local buffer). For each event:
//   - bytes that do not decode into a valid E are dead-lettered;
//   - h runs with a context carrying a zerolog logger (stage, block, site), while Run keeps
//     the lease alive with InProgress every AckWait/3;
//   - nil: the event is acked (and the ack confirmed);
//   - a Permanent error: dead-lettered;
//   - another error: redelivered after a delay from spec.Backoff, until spec.Attempts
//     deliveries, then dead-lettered.
//
// Dead-lettering copies the event to <prefix>.dlq.<stage>.<last token> and only then
// terminates it. Run returns nil when ctx ends, after the events in hand are handled and
// settled (handlers are not cancelled). It returns an error if the consumer cannot be
// created or the connection is closed.
func Run[E schemas.Validator](ctx context.Context, b *Bus, spec ConsumerSpec, h Handler[E]) error {
	spec, err := spec.withDefaults()
	if err != nil {
		return err
	}
	cons, err := b.ensureConsumer(ctx, spec)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s := &runner[E]{
		bus:     b,
		spec:    spec,
		handler: h,
		log:     b.log.With().Str(logging.FieldStage, spec.Durable).Logger(),
		metrics: b.metrics.stage(spec.Durable),
	}
	s.log.Info().Int("slots", spec.Slots).Strs("filter", spec.FilterSubjects).Msg("stage running")

	fetchCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range spec.Slots {
		wg.Go(func() {
			if err := s.slot(fetchCtx, cons); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				stop()
			}
		})
	}
	wg.Wait()
	s.log.Info().Err(firstErr).Msg("stage stopped")
	return firstErr
}

// ensureConsumer creates or updates the stage's durable consumer.
func (b *Bus) ensureConsumer(ctx context.Context, spec ConsumerSpec) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:        spec.Durable,
		Description:    "blockflow stage " + spec.Durable,
		FilterSubjects: spec.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		// Unlimited: Run dead-letters after spec.Attempts itself, and an event whose worker
		// died at any delivery must still come back.
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	}
	var cons jetstream.Consumer
	err := b.retryTransient(ctx, "create consumer "+spec.Durable, func(ctx context.Context) (err error) {
		cons, err = b.js.CreateOrUpdateConsumer(ctx, spec.Stream, cfg)
		return err
	})
	return cons, err
}

// runner is one Run: the handler and what it needs to settle events.
type runner[E schemas.Validator] struct {
	bus     *Bus
	spec    ConsumerSpec
	handler Handler[E]
	log     zerolog.Logger
	metrics stageMetrics
}

// slot pulls and handles one event at a time until ctx ends. Fetch errors are logged and
// retried; only a closed connection ends it with an error.
func (s *runner[E]) slot(ctx context.Context, cons jetstream.Consumer) error {
	retry := retrySchedule()
	for ctx.Err() == nil {
		msg, err := cons.Next(jetstream.FetchMaxWait(fetchWait))
		switch {
		case err == nil:
			retry.Reset()
			if ctx.Err() != nil {
				// Shutting down: hand it straight back to the rest of the pool.
				if err := msg.Nak(); err != nil {
					s.log.Warn().Err(err).Str("subject", msg.Subject()).Msg("returning event on shutdown failed")
				}
				return nil
			}
			s.handle(ctx, msg)
		case errors.Is(err, nats.ErrTimeout):
			// No event within fetchWait.
			retry.Reset()
		case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrConnectionClosed):
			return fmt.Errorf("stage %s: %w", s.spec.Durable, err)
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
			d := retry.NextBackOff()
			s.log.Warn().Err(err).Dur("retry_in", d).Msg("consumer is gone, re-creating it")
			if !sleep(ctx, d) {
				return nil
			}
			if c, err := s.bus.ensureConsumer(ctx, s.spec); err == nil {
				cons = c
			} else if ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("re-creating consumer failed")
			}
		default:
			d := retry.NextBackOff()
			s.log.Warn().Err(err).Dur("retry_in", d).Msg("fetching an event failed")
			sleep(ctx, d)
		}
	}
	return nil
}

// handle runs the handler on one event and settles it. The handler's context is not
// cancelled with Run's: an event in hand is finished and acked during shutdown.
func (s *runner[E]) handle(runCtx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error().Err(err).Str("subject", msg.Subject()).Msg("terminating a message without JetStream metadata")
		_ = msg.Term()
		return
	}
	log := s.eventLogger(msg.Subject(), md)
	ctx := log.WithContext(context.WithoutCancel(runCtx))

	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	lease := keepAlive(ctx, msg, s.spec.AckWait/3, log)
	defer lease.stop()

	if md.NumDelivered > uint64(s.spec.Attempts) {
		// Only a worker that died (or failed to settle) on every earlier delivery gets here.
		s.deadLetter(ctx, msg, md, lease, log,
			fmt.Sprintf("retries exhausted: delivered %d times without a result", md.NumDelivered))
		return
	}
	ev, err := schemas.Decode[E](msg.Data())
	if err != nil {
		s.deadLetter(ctx, msg, md, lease, log, err.Error())
		return
	}

	start := time.Now()
	err = s.call(ctx, ev, log)
	took := time.Since(start)
	s.metrics.handle.Observe(took.Seconds())
	log = log.With().Dur("took", took).Logger()

	switch {
	case err == nil:
		lease.stop()
		s.metrics.ok.Inc()
		actx, cancel := context.WithTimeout(ctx, settleTimeout)
		defer cancel()
		if err := msg.DoubleAck(actx); err != nil {
			log.Error().Err(err).Msg("event handled but the ack failed: it will be redelivered")
			return
		}
		log.Info().Msg("event handled")
	case IsPermanent(err):
		s.deadLetter(ctx, msg, md, lease, log, err.Error())
	case md.NumDelivered >= uint64(s.spec.Attempts):
		s.deadLetter(ctx, msg, md, lease, log, "retries exhausted: "+err.Error())
	default:
		delay := retryDelay(s.spec.Backoff, md.NumDelivered)
		if delay == backoff.Stop {
			s.deadLetter(ctx, msg, md, lease, log, "retries exhausted (backoff stopped): "+err.Error())
			return
		}
		s.nak(msg, delay, lease, log.Warn().Err(err), "event failed, will retry")
	}
}

// call runs the handler, turning a panic into an error so a poison event is retried and
// then dead-lettered instead of crashing every worker in turn.
func (s *runner[E]) call(ctx context.Context, ev E, log zerolog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error().Str("stack", string(debug.Stack())).Msgf("handler panicked: %v", r)
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return s.handler(ctx, ev)
}

// nak asks for a redelivery after delay and logs ev with msgText.
func (s *runner[E]) nak(msg jetstream.Msg, delay time.Duration, lease *lease, ev *zerolog.Event, msgText string) {
	lease.stop()
	s.metrics.retry.Inc()
	if err := msg.NakWithDelay(delay); err != nil {
		ev = ev.AnErr("nak_error", err)
	}
	ev.Dur("retry_in", delay).Msg(msgText)
}

func (s *runner[E]) eventLogger(subject string, md *jetstream.MsgMetadata) zerolog.Logger {
	c := s.log.With().
		Str("subject", subject).
		Uint64("seq", md.Sequence.Stream).
		Uint64("delivery", md.NumDelivered)
	if es := s.bus.parseSubject(subject); es.site != "" {
		c = c.Str(logging.FieldSite, es.site)
		if es.block != "" {
			c = c.Str(logging.FieldBlock, es.block)
		}
	}
	return c.Logger()
}

// retryDelay is the schedule's delay after the n-th delivery failed (n counts from 1).
func retryDelay(schedule func() backoff.BackOff, n uint64) time.Duration {
	const maxSteps = 1000 // the schedule has long reached its cap
	b := schedule()
	b.Reset()
	d := time.Duration(0)
	for i := uint64(0); i < n && i < maxSteps; i++ {
		if d = b.NextBackOff(); d == backoff.Stop {
			return backoff.Stop
		}
	}
	return d
}

// lease keeps an event's ack deadline moving while it is being worked on.
type lease struct {
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func keepAlive(ctx context.Context, msg jetstream.Msg, every time.Duration, log zerolog.Logger) *lease {
	ctx, cancel := context.WithCancel(ctx)
	l := &lease{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					log.Warn().Err(err).Msg("extending the event's lease failed")
				}
			}
		}
	}()
	return l
}

// stop ends the heartbeats; it returns once none can be sent any more, so a progress
// signal never follows the ack, nak or term.
func (l *lease) stop() {
	l.once.Do(func() {
		l.cancel()
		<-l.done
	})
}
