package block

import (
	"context"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/schemas"
)

// RecordUpdater is the catalogue's compare-and-swap write: fn changes the record (exists
// is false when there is none); an error from fn writes nothing.
type RecordUpdater interface {
	Update(ctx context.Context, id ulid.ULID, fn func(rec *schemas.BlockRecord, exists bool) error) (schemas.BlockRecord, error)
}

// MarkDeleted writes id's deletion mark (idempotent; an existing mark keeps its time) and
// then records the block as marked in the catalogue, with the mark's time. It returns the
// record as written; a block the catalogue does not know is an error wrapping
// stage.ErrNotFound, and its mark stays (retention deletes it all the same).
func MarkDeleted(ctx context.Context, bkt objstore.Bucket, cat RecordUpdater, id ulid.ULID, details string, now time.Time) (schemas.BlockRecord, error) {
	mark, err := MarkForDeletion(ctx, bkt, id, details, now)
	if err != nil {
		return schemas.BlockRecord{}, err
	}
	rec, err := cat.Update(ctx, id, func(r *schemas.BlockRecord, exists bool) error {
		if !exists {
			return fmt.Errorf("block %s is not in the catalogue: %w", id, stage.ErrNotFound)
		}
		if r.State == schemas.StateLive {
			r.State = schemas.StateMarked
			r.MarkedTime = mark.DeletionTime * 1000
		}
		return nil
	})
	if err != nil {
		return rec, fmt.Errorf("catalogue: %w", err)
	}
	return rec, nil
}
