// Package retention is the retention worker: it follows the catalogue (no bucket listing)
// and, at the time each falls due, deletes blocks whose deletion mark is older than the
// delete delay (meta.json first, deletion-mark.json last), marks blocks past the
// retention of their resolution, and marks blocks a compaction output covers. One
// process acts at a time, under a lease; others stand by with the catalogue loaded.
package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/catalogview"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
)

// Catalogue is the block catalogue.
type Catalogue interface {
	// Watch delivers every record, then synced, then each change, until ctx ends.
	Watch(ctx context.Context, apply func(schemas.BlockRecord), synced func()) error
	// Update lets fn change the record (exists is false when there is none) and writes it
	// unless somebody wrote in between, in which case it starts over.
	Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error)
}

// Publisher publishes an event about one block.
type Publisher interface {
	PublishBlockEvent(ctx context.Context, event, site string, id ulid.ULID, v any) error
}

// Leader runs fn while this process holds the retention lease, with a context that ends
// when the lease is lost; it returns when ctx ends.
type Leader = catalogview.Leader

// errNoRecord stops a catalogue update of a block the catalogue does not know.
var errNoRecord = errors.New("block is not in the catalogue")

// LeaseName is the lease retention workers compete for.
const LeaseName = "retention"

const (
	// retryAfter is the wait before acting again after a failure.
	retryAfter = 30 * time.Second
)

// Options configure Run.
type Options struct {
	Bucket    objstore.Bucket
	Catalogue Catalogue
	Publisher Publisher
	// Leader elects one retention worker among several; nil means this process always
	// acts (it must then be the only one).
	Leader     Leader
	Policy     Policy
	Logger     zerolog.Logger
	Registerer prometheus.Registerer
}

// Run applies the policy until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Bucket == nil || o.Catalogue == nil || o.Publisher == nil {
		return errors.New("retention: bucket, catalogue and publisher are required")
	}
	if err := o.Policy.validate(); err != nil {
		return err
	}
	r := &worker{
		o:    o,
		log:  o.Logger.With().Str(logging.FieldStage, "retention").Logger(),
		m:    newMetrics(o.Registerer),
		view: catalogview.New(),
	}
	return r.view.Run(ctx, o.Catalogue, o.Leader, r.lead)
}

type worker struct {
	o   Options
	log zerolog.Logger
	m   *metrics

	view *catalogview.View
}

// lead acts while this worker leads (until ctx ends).
func (r *worker) lead(ctx context.Context) error {
	if !r.view.WaitSynced(ctx) {
		return nil
	}
	r.log.Info().Dur("delete_delay", r.o.Policy.DeleteDelay).Dur("raw", r.o.Policy.Raw).
		Dur("5m", r.o.Policy.FiveMinutes).Dur("1h", r.o.Policy.OneHour).Msg("applying retention")
	for {
		blocks := r.view.Snapshot()
		actions, next := Due(blocks, time.Now(), r.o.Policy)
		pending := 0
		for _, b := range blocks {
			if b.State == schemas.StateMarked {
				pending++
			}
		}
		r.m.todoDeletions.Set(float64(pending))
		for _, a := range actions {
			if ctx.Err() != nil {
				return nil
			}
			if err := r.do(ctx, a); err != nil {
				r.m.errors.Inc()
				r.log.Warn().Err(err).Str(logging.FieldBlock, a.Block.ULID.String()).Str("action", a.Kind).Msg("retention action failed; will retry")
				if retry := time.Now().Add(retryAfter); next.IsZero() || retry.Before(next) {
					next = retry
				}
			}
		}
		if !r.view.Wait(ctx, next, nil) {
			return nil
		}
	}
}

func (r *worker) do(ctx context.Context, a Action) error {
	switch a.Kind {
	case ActionMark:
		return r.mark(ctx, a.Block, a.Reason)
	case ActionDelete:
		return r.delete(ctx, a.Block)
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

// mark writes the block's deletion mark, then records it in the catalogue.
func (r *worker) mark(ctx context.Context, b schemas.BlockRecord, reason string) error {
	rec, err := block.MarkDeleted(ctx, r.o.Bucket, r.o.Catalogue, b.ULID, reason, time.Now())
	if err != nil {
		return err
	}
	r.m.marked.WithLabelValues(reason).Inc()
	r.log.Info().Str(logging.FieldBlock, b.ULID.String()).Str("reason", reason).Msg("block marked for deletion")
	return r.publish(ctx, schemas.EventMarked, rec, reason)
}

// delete removes a marked block from the bucket, once the mark in the bucket (the truth,
// which the catalogue mirrors) is old enough, then records it deleted.
func (r *worker) delete(ctx context.Context, b schemas.BlockRecord) error {
	mark, err := block.MarkForDeletion(ctx, r.o.Bucket, b.ULID, "", time.Now())
	if err != nil {
		return err
	}
	if marked := time.Unix(mark.DeletionTime, 0); time.Now().Before(marked.Add(r.o.Policy.DeleteDelay)) {
		// The catalogue's time was off: take the bucket's, which plans the deletion anew.
		_, err := r.o.Catalogue.Update(ctx, b.ULID, func(rec *schemas.BlockRecord, exists bool) error {
			if !exists {
				return errNoRecord
			}
			if rec.State == schemas.StateMarked {
				rec.MarkedTime = marked.UnixMilli()
			}
			return nil
		})
		return err
	}
	if err := block.Delete(ctx, r.o.Bucket, b.ULID); err != nil {
		return err
	}
	rec, err := r.o.Catalogue.Update(ctx, b.ULID, func(rec *schemas.BlockRecord, exists bool) error {
		if !exists {
			return errNoRecord
		}
		rec.State = schemas.StateDeleted
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalogue: %w", err)
	}
	r.m.deleted.Inc()
	r.log.Info().Str(logging.FieldBlock, b.ULID.String()).Msg("block deleted")
	return r.publish(ctx, schemas.EventDeleted, rec, "deletion mark older than the delete delay")
}

// publish announces a state change on the block's site, or its compaction group when it
// has none (compaction outputs).
func (r *worker) publish(ctx context.Context, event string, rec schemas.BlockRecord, reason string) error {
	site := rec.Site
	if site == "" {
		site = block.GroupKey(rec.Labels, rec.Resolution)
	}
	ev := schemas.BlockStateChanged{Version: schemas.Version, Record: rec, Reason: reason}
	if err := r.o.Publisher.PublishBlockEvent(ctx, event, site, rec.ULID, ev); err != nil {
		return fmt.Errorf("publish %s: %w", event, err)
	}
	return nil
}
