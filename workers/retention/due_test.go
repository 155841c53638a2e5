package retention_test

import (
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/retention"
)

var now = time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)

func rec(n uint64, state string, res int64, maxtAgo time.Duration) schemas.BlockRecord {
	maxt := now.Add(-maxtAgo).UnixMilli()
	return schemas.BlockRecord{
		Version: schemas.Version, ULID: ulid.MustNew(n, nil), MinTime: maxt - 7_200_000, MaxTime: maxt,
		Labels: map[string]string{"cluster": "a"}, Resolution: res, State: state,
	}
}

func markedAgo(b schemas.BlockRecord, ago time.Duration) schemas.BlockRecord {
	b.MarkedTime = now.Add(-ago).UnixMilli()
	return b
}

func TestDue(t *testing.T) {
	policy := retention.Policy{DeleteDelay: 48 * time.Hour, Raw: 30 * 24 * time.Hour, FiveMinutes: 90 * 24 * time.Hour}
	compacted := rec(10, schemas.StateLive, schemas.ResRaw, time.Hour)
	compacted.Sources = []ulid.ULID{ulid.MustNew(11, nil), ulid.MustNew(12, nil)}
	for _, c := range []struct {
		name     string
		blocks   []schemas.BlockRecord
		policy   retention.Policy
		want     []string
		wantNext time.Time
	}{
		{
			name:   "nothing due: the next deletion and expiry are scheduled",
			blocks: []schemas.BlockRecord{markedAgo(rec(1, schemas.StateMarked, 0, time.Hour), time.Hour), rec(2, schemas.StateLive, 0, 29*24*time.Hour)},
			policy: policy, wantNext: now.Add(24 * time.Hour),
		},
		{
			name:   "a mark older than the delete delay: delete",
			blocks: []schemas.BlockRecord{markedAgo(rec(1, schemas.StateMarked, 0, time.Hour), 49*time.Hour)},
			policy: policy, want: []string{"delete " + ulid.MustNew(1, nil).String()},
		},
		{
			name:   "delete delay 0: delete at once",
			blocks: []schemas.BlockRecord{markedAgo(rec(1, schemas.StateMarked, 0, time.Hour), 0)},
			want:   []string{"delete " + ulid.MustNew(1, nil).String()},
		},
		{
			name: "retention by resolution, judged by MaxTime; 0 keeps for ever",
			blocks: []schemas.BlockRecord{
				rec(1, schemas.StateLive, schemas.ResRaw, 31*24*time.Hour),
				rec(2, schemas.StateLive, schemas.Res5m, 31*24*time.Hour),
				rec(3, schemas.StateLive, schemas.Res5m, 91*24*time.Hour),
				rec(4, schemas.StateLive, schemas.Res1h, 1000*24*time.Hour),
			},
			policy:   policy,
			want:     []string{"mark " + ulid.MustNew(1, nil).String() + " (retention)", "mark " + ulid.MustNew(3, nil).String() + " (retention)"},
			wantNext: now.Add(59 * 24 * time.Hour),
		},
		{
			name: "a live block covered by a compacted one is marked; deleted blocks are ignored",
			blocks: []schemas.BlockRecord{
				compacted,
				rec(11, schemas.StateLive, schemas.ResRaw, time.Hour),
				rec(12, schemas.StateMarked, schemas.ResRaw, time.Hour),
				rec(13, schemas.StateDeleted, schemas.ResRaw, 1000*24*time.Hour),
			},
			want: []string{"mark " + ulid.MustNew(11, nil).String() + " (covered)", "delete " + ulid.MustNew(12, nil).String()},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			actions, next := retention.Due(c.blocks, now, c.policy)
			var got []string
			for _, a := range actions {
				got = append(got, a.String())
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(c.want))
			if !slices.Equal(got, want) {
				t.Errorf("actions = %v, want %v", got, want)
			}
			if !next.Equal(c.wantNext) {
				t.Errorf("next = %v, want %v", next, c.wantNext)
			}
		})
	}
}
