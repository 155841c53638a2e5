package bus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
)

// Bus is a connection to NATS with blockflow's streams, catalogue and staging store set up.
// It is safe for concurrent use.
type Bus struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	prefix    string
	replicas  int // of every stream and bucket the bus creates
	log       zerolog.Logger
	metrics   *metrics
	catalogue *Catalogue
	staging   *Staging
	// closed is closed by the connection's closed handler.
	closed chan struct{}
	// reconnected tells watchers to re-create their server-side consumers, which a
	// restarted server may have lost.
	reconnected *broadcast
}

// Connect dials NATS, waits until JetStream answers (a cluster has no meta leader for a
// moment after it starts), and creates or updates the streams, the catalogue KV and the
// staging object store. It keeps reconnecting for ever once connected, and also when the
// first dial fails, so a worker may start before its server.
func Connect(ctx context.Context, cfg Config, log zerolog.Logger) (*Bus, error) {
	if cfg.URL == "" {
		return nil, errors.New("bus: no NATS URL")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log = log.With().Str(logging.FieldComponent, "bus").Logger()
	closed := make(chan struct{})
	reconnected := newBroadcast()
	nc, err := nats.Connect(cfg.URL, natsOptions(cfg, log, closed, reconnected)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(cfg.URL), err)
	}
	var js jetstream.JetStream
	if cfg.Domain != "" {
		js, err = jetstream.NewWithDomain(nc, cfg.Domain)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream context: %w", err)
	}
	b := &Bus{nc: nc, js: js, prefix: cfg.Prefix, replicas: cfg.Replicas, log: log, metrics: m, closed: closed, reconnected: reconnected}
	if err := b.waitJetStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if err := b.setup(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

func natsOptions(cfg Config, log zerolog.Logger, closed chan struct{}, reconnected *broadcast) []nats.Option {
	name := cfg.Name
	if name == "" {
		name = "blockflow"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.DrainTimeout(10 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", redactURLs(nc.ConnectedUrl())).Msg("connected to NATS")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", redactURLs(nc.ConnectedUrl())).Msg("reconnected to NATS")
			reconnected.fire()
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("NATS reconnect attempt failed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS asynchronous error")
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug().Msg("NATS connection closed")
			close(closed)
		}),
	}
	switch {
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts
}

// redactURLs drops the user information (user, password or token) from a comma-separated
// list of server URLs so it can be logged.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		switch {
		case err != nil:
			// Unparseable: keep only what follows the last '@', if any.
			if at := strings.LastIndex(p, "@"); at >= 0 {
				p = p[at+1:]
			}
		case u.User != nil:
			u.User = nil
			p = u.String()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// waitJetStream polls the account info until JetStream answers or ctx ends.
func (b *Bus) waitJetStream(ctx context.Context) error {
	var last error
	op := func() error {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
		_, err := b.js.AccountInfo(actx)
		last = err
		return err
	}
	notify := func(err error, d time.Duration) {
		b.log.Info().Err(err).Dur("retry_in", d).Msg("waiting for JetStream")
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(retrySchedule(), ctx), notify); err != nil {
		if last != nil && !errors.Is(err, last) {
			return fmt.Errorf("wait for JetStream: %w (last error: %v)", err, last)
		}
		return fmt.Errorf("wait for JetStream: %w", err)
	}
	return nil
}

// Ping reports whether the connection is up and JetStream answers; for readiness probes.
func (b *Bus) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("NATS connection is %s", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream account info: %w", err)
	}
	return nil
}

// Close drains the connection: pending publishes and acks are flushed, then it closes.
// Stop every Run first (cancel their contexts and wait) so their acks are among them.
func (b *Bus) Close() error {
	err := b.nc.Drain()
	switch {
	case errors.Is(err, nats.ErrConnectionClosed):
		return nil
	case err != nil:
		b.nc.Close()
		return fmt.Errorf("drain NATS connection: %w", err)
	}
	<-b.closed
	return nil
}

// Catalogue returns the block catalogue (the KV bucket).
func (b *Bus) Catalogue() *Catalogue { return b.catalogue }

// Staging returns the staging object store.
func (b *Bus) Staging() *Staging { return b.staging }

// broadcast wakes every waiter each time it fires.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

// wait returns a channel that is closed at the next fire.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}
