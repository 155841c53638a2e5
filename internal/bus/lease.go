package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// LeaseBucket is the KV bucket of leases: one key per singleton role (a planner, the
// retention worker), held by one process at a time.
const LeaseBucket = "blockflow-leases"

// LeaseTTL is how long a lease outlives its holder's last renewal: the bucket's key
// expiry, so a holder that dies without releasing is replaced within LeaseTTL.
const LeaseTTL = 10 * time.Second

const (
	// leaseRenewEvery is how often a holder writes its lease again.
	leaseRenewEvery = LeaseTTL / 4
	// leaseSafeFor is how long after its last successful renewal a holder still acts. It
	// stops well before the key can expire on the server, so two holders never overlap
	// even if this process's clock runs a little slow.
	leaseSafeFor = LeaseTTL * 2 / 3
	// leasePollEvery is how often a waiting process tries to take the lease.
	leasePollEvery = LeaseTTL / 5
)

// Lease is a named lock in the leases bucket, for a role that must run in one process at
// a time while several stand by.
type Lease struct {
	bus    *Bus
	key    string
	holder string
	log    zerolog.Logger

	once sync.Once
	kv   jetstream.KeyValue
	err  error
}

// Lease returns the lease called name (a KV key: letters, digits, '-', '_', '.');
// holder names this process in the key's value, for operators.
func (b *Bus) Lease(name, holder string) *Lease {
	return &Lease{bus: b, key: name, holder: holder, log: b.log.With().Str("lease", name).Logger()}
}

// Lead runs fn whenever this process holds the lease: it waits until the lease is free,
// takes it, and calls fn with a context that ends when the lease is lost (it could not be
// renewed in time) or ctx ends. When fn returns, the lease is released, and unless ctx has
// ended Lead competes for it again. Lead returns nil when ctx ends, or fn's error.
func (l *Lease) Lead(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := l.open(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	for {
		rev, ok := l.acquire(ctx)
		if !ok {
			return nil
		}
		l.log.Info().Str("holder", l.holder).Msg("lease taken")
		err := l.hold(ctx, rev, fn)
		if err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// open creates the leases bucket, replicated like the catalogue, once.
func (l *Lease) open(ctx context.Context) error {
	l.once.Do(func() {
		b := l.bus
		l.err = b.retryTransient(ctx, "create KV bucket "+LeaseBucket, func(ctx context.Context) (err error) {
			l.kv, err = b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      LeaseBucket,
				Description: "blockflow leases: which process runs each singleton role",
				History:     1,
				TTL:         LeaseTTL,
				Storage:     jetstream.FileStorage,
				Replicas:    b.replicas,
			})
			return err
		})
	})
	return l.err
}

// acquire tries to create the key until it succeeds (it returns the revision) or ctx ends.
func (l *Lease) acquire(ctx context.Context) (uint64, bool) {
	waiting := false
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		rev, err := l.kv.Create(actx, l.key, []byte(l.holder))
		cancel()
		switch {
		case err == nil:
			return rev, true
		case ctx.Err() != nil:
			return 0, false
		case errors.Is(err, jetstream.ErrKeyExists):
			if !waiting {
				l.log.Info().Msg("lease held elsewhere; standing by")
				waiting = true
			}
		default:
			l.log.Warn().Err(err).Msg("taking the lease failed")
		}
		if !sleep(ctx, leasePollEvery) {
			return 0, false
		}
	}
}

// hold runs fn while renewing the lease, then releases it.
func (l *Lease) hold(ctx context.Context, rev uint64, fn func(ctx context.Context) error) error {
	fctx, lost := context.WithCancel(ctx)
	defer lost()
	var (
		wg      sync.WaitGroup
		lastRev = rev
	)
	wg.Go(func() {
		lastRev = l.renew(fctx, rev, lost)
	})
	err := fn(fctx)
	lost()
	wg.Wait()

	// Release, so a standby takes over at once rather than after LeaseTTL.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), attemptTimeout)
	defer cancel()
	if derr := l.kv.Delete(rctx, l.key, jetstream.LastRevision(lastRev)); derr != nil && !errors.Is(derr, jetstream.ErrKeyRevisionMismatch) {
		l.log.Warn().Err(derr).Msg("releasing the lease failed; it expires by itself")
	} else {
		l.log.Info().Msg("lease released")
	}
	if err != nil {
		return fmt.Errorf("lease %s: %w", l.key, err)
	}
	return nil
}

// renew rewrites the lease every leaseRenewEvery until ctx ends, and calls lost when the
// lease was taken over or could not be renewed for leaseSafeFor. It returns the last
// revision written.
func (l *Lease) renew(ctx context.Context, rev uint64, lost context.CancelFunc) uint64 {
	last := time.Now()
	t := time.NewTicker(leaseRenewEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return rev
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		next, err := l.kv.Update(actx, l.key, []byte(l.holder), rev)
		cancel()
		switch {
		case err == nil:
			rev, last = next, time.Now()
		case ctx.Err() != nil:
			return rev
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			l.log.Warn().Msg("lease lost: it expired or was taken over")
			lost()
			return rev
		case time.Since(last) > leaseSafeFor:
			l.log.Warn().Err(err).Msg("lease lost: it could not be renewed in time")
			lost()
			return rev
		default:
			l.log.Warn().Err(err).Msg("renewing the lease failed; retrying")
		}
	}
}
