package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/schemas"
)

// ErrNoRecord is returned (wrapped) for a block the catalogue does not know. It wraps
// ErrNotFound.
var ErrNoRecord = fmt.Errorf("no catalogue record: %w", ErrNotFound)

// Catalogue is the last record of every block, keyed by ULID, in a KV bucket. Writers use
// Update, a compare-and-swap loop; readers Watch it.
type Catalogue struct {
	kv          jetstream.KeyValue
	log         zerolog.Logger
	reconnected *broadcast
}

// Get returns the block's record and its revision.
func (c *Catalogue) Get(ctx context.Context, id ulid.ULID) (schemas.BlockRecord, uint64, error) {
	e, err := c.kv.Get(ctx, id.String())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return schemas.BlockRecord{}, 0, fmt.Errorf("block %s: %w", id, ErrNoRecord)
	}
	if err != nil {
		return schemas.BlockRecord{}, 0, fmt.Errorf("get catalogue record %s: %w", id, err)
	}
	rec, err := schemas.Decode[schemas.BlockRecord](e.Value())
	if err != nil {
		return schemas.BlockRecord{}, 0, fmt.Errorf("catalogue record %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// Put writes rec whatever is there. Prefer Update unless rec is the whole truth.
func (c *Catalogue) Put(ctx context.Context, rec schemas.BlockRecord) error {
	data, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	if _, err := c.kv.Put(ctx, rec.ULID.String(), data); err != nil {
		return fmt.Errorf("put catalogue record %s: %w", rec.ULID, err)
	}
	return nil
}

// Update reads the block's record, lets fn change it (exists is false, and rec zero, when
// there is none) and writes it back if nobody wrote in between; otherwise it starts over
// with the newer record. fn may run more than once. An error from fn is returned as is and
// nothing is written. The record written gets id as its ULID.
func (c *Catalogue) Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error) {
	key := id.String()
	for {
		var (
			rec    schemas.BlockRecord
			rev    uint64
			exists bool
		)
		e, err := c.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return rec, fmt.Errorf("get catalogue record %s: %w", id, err)
		default:
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return rec, fmt.Errorf("decode catalogue record %s: %w", id, err)
			}
			rev, exists = e.Revision(), true
		}
		if err := fn(&rec, exists); err != nil {
			return rec, err
		}
		if rec.ULID == (ulid.ULID{}) {
			rec.ULID = id
		}
		if rec.ULID != id {
			return rec, fmt.Errorf("update catalogue record %s: the update changed the ULID to %s", id, rec.ULID)
		}
		data, err := encodeRecord(rec)
		if err != nil {
			return rec, err
		}
		if exists {
			_, err = c.kv.Update(ctx, key, data, rev)
		} else {
			_, err = c.kv.Create(ctx, key, data)
		}
		switch {
		case err == nil:
			return rec, nil
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			// Somebody else wrote first: start over from their record.
			if ctx.Err() != nil {
				return rec, fmt.Errorf("update catalogue record %s: %w", id, ctx.Err())
			}
		default:
			return rec, fmt.Errorf("write catalogue record %s: %w", id, err)
		}
	}
}

func encodeRecord(rec schemas.BlockRecord) ([]byte, error) {
	if err := rec.Validate(); err != nil {
		return nil, fmt.Errorf("catalogue record %s: %w", rec.ULID, err)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encode catalogue record %s: %w", rec.ULID, err)
	}
	return data, nil
}

// Watch calls apply with every record in the catalogue, then synced once, then apply with
// every change until ctx ends (it then returns nil). A value that does not decode is logged
// and skipped; deleted keys are skipped (blocks are never deleted from the catalogue, they
// get the state "deleted"). After a reconnect, or if the watch breaks, it is re-created
// from the last revision seen, so apply may see a record again; it must be idempotent by
// ULID.
func (c *Catalogue) Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error {
	var (
		resume   uint64
		isSynced bool
	)
	retry := retrySchedule()
	for {
		reconnected := c.reconnected.wait()
		opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
		if resume > 0 {
			opts = append(opts, jetstream.ResumeFromRevision(resume))
		}
		w, err := c.kv.WatchAll(ctx, opts...)
		if err == nil {
			why := c.follow(ctx, w, reconnected, &resume, func() {
				if !isSynced {
					isSynced = true
					synced()
				}
			}, apply)
			_ = w.Stop()
			if ctx.Err() != nil {
				return nil
			}
			c.log.Info().Uint64("resume_revision", resume).Msg(why + ": re-creating the catalogue watch")
			retry.Reset()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed) {
			return fmt.Errorf("watch catalogue: %w", err)
		}
		d := retry.NextBackOff()
		c.log.Warn().Err(err).Uint64("resume_revision", resume).Dur("retry_in", d).Msg("creating the catalogue watch failed")
		if !sleep(ctx, d) {
			return nil
		}
	}
}

// follow hands the watcher's entries to apply (and its end-of-snapshot marker to synced)
// until the watch ends, the connection is re-established or ctx ends; it says which.
func (c *Catalogue) follow(ctx context.Context, w jetstream.KeyWatcher, reconnected <-chan struct{}, resume *uint64, synced func(), apply func(schemas.BlockRecord)) string {
	for {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return "the watch ended"
			case e == nil:
				synced()
				continue
			}
			*resume = e.Revision() + 1
			rec, err := schemas.Decode[schemas.BlockRecord](e.Value())
			if err != nil {
				c.log.Warn().Err(err).Str("key", e.Key()).Uint64("revision", e.Revision()).Msg("skipping a catalogue value")
				continue
			}
			apply(rec)
		case <-reconnected:
			return "reconnected"
		case <-ctx.Done():
			return "done"
		}
	}
}

// List returns every record in the catalogue now.
func (c *Catalogue) List(ctx context.Context) ([]schemas.BlockRecord, error) {
	w, err := c.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list catalogue: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []schemas.BlockRecord
	for {
		select {
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				return nil, errors.New("list catalogue: the watch ended before the snapshot did")
			case e == nil:
				return out, nil
			}
			rec, err := schemas.Decode[schemas.BlockRecord](e.Value())
			if err != nil {
				c.log.Warn().Err(err).Str("key", e.Key()).Msg("skipping a catalogue value")
				continue
			}
			out = append(out, rec)
		case <-ctx.Done():
			return nil, fmt.Errorf("list catalogue: %w", ctx.Err())
		}
	}
}
