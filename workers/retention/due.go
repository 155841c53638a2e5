package retention

import (
	"errors"
	"fmt"
	"time"

	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/planner"
)

// DefaultDeleteDelay is the time between a block's deletion mark and its deletion, as
// Thanos' --delete-delay: readers that still hold the block have that long to drop it.
const DefaultDeleteDelay = 48 * time.Hour

// Policy says when blocks go.
type Policy struct {
	// DeleteDelay is how long a block stays in the bucket after its deletion mark; 0
	// deletes at once.
	DeleteDelay time.Duration
	// Raw, FiveMinutes and OneHour are the retention of each resolution, judged by a
	// block's MaxTime (Thanos' --retention.resolution-raw, -5m, -1h); 0 keeps blocks for
	// ever.
	Raw, FiveMinutes, OneHour time.Duration
}

func (p Policy) validate() error {
	if p.DeleteDelay < 0 || p.Raw < 0 || p.FiveMinutes < 0 || p.OneHour < 0 {
		return errors.New("retention: negative durations")
	}
	return nil
}

// retention is the retention of resolution res (0: for ever).
func (p Policy) retention(res int64) time.Duration {
	switch res {
	case schemas.ResRaw:
		return p.Raw
	case schemas.Res5m:
		return p.FiveMinutes
	case schemas.Res1h:
		return p.OneHour
	}
	return 0
}

// Kinds of Action.
const (
	ActionMark   = "mark"   // write a deletion mark
	ActionDelete = "delete" // delete the block from the bucket
)

// Reasons for a deletion mark.
const (
	ReasonRetention = "retention"
	ReasonCovered   = "covered" // compacted into a block that has all its sources, by a job that did not mark it
)

// Action is one thing to do to one block.
type Action struct {
	Kind   string
	Reason string // for ActionMark
	Block  schemas.BlockRecord
}

func (a Action) String() string {
	if a.Kind == ActionMark {
		return fmt.Sprintf("mark %s (%s)", a.Block.ULID, a.Reason)
	}
	return fmt.Sprintf("%s %s", a.Kind, a.Block.ULID)
}

// Due returns what must be done to blocks at now, and when the next thing falls due
// (zero: nothing will without a change):
//   - a marked block whose mark is DeleteDelay old is deleted;
//   - a live block past the retention of its resolution (MaxTime + retention) is marked;
//   - a live block whose sources another live block of its resolution covers is marked:
//     it was compacted into that block by a job that did not get to mark it (the Thanos
//     compactor's garbage collection).
func Due(blocks []schemas.BlockRecord, now time.Time, p Policy) ([]Action, time.Time) {
	var (
		out  []Action
		next time.Time
		live []schemas.BlockRecord
	)
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, b := range blocks {
		switch b.State {
		case schemas.StateMarked:
			at := time.UnixMilli(b.MarkedTime).Add(p.DeleteDelay)
			if now.Before(at) {
				later(at)
				continue
			}
			out = append(out, Action{Kind: ActionDelete, Block: b})
		case schemas.StateLive:
			live = append(live, b)
		}
	}
	covered := planner.Covered(live)
	for _, b := range live {
		if covered[b.ULID] {
			out = append(out, Action{Kind: ActionMark, Reason: ReasonCovered, Block: b})
			continue
		}
		keep := p.retention(b.Resolution)
		if keep == 0 {
			continue
		}
		at := time.UnixMilli(b.MaxTime).Add(keep)
		if now.Before(at) {
			later(at)
			continue
		}
		out = append(out, Action{Kind: ActionMark, Reason: ReasonRetention, Block: b})
	}
	return out, next
}
