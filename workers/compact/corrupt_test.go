package compact_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
	"github.com/blockflow/blockflow/workers/planner"
)

// TestCorruptInputIsMarkedAndItsGroupGoesOn: a block that cannot be read gets a
// no-compact mark, its job a dead letter, and the planner compacts the rest of the group
// without it (where the Thanos compactor would halt).
func TestCorruptInputIsMarkedAndItsGroupGoesOn(t *testing.T) {
	for _, c := range []struct {
		name   string
		hashes bool
		damage func(t *testing.T, dir string)
	}{
		{
			name:   "truncated index (caught on download by its size)",
			hashes: true,
			damage: func(t *testing.T, dir string) {
				if err := os.Truncate(filepath.Join(dir, block.IndexFilename), 100); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "damaged chunk of a block without hashes (caught by the compaction's checksums)",
			damage: func(t *testing.T, dir string) {
				name := filepath.Join(dir, "chunks", "000001")
				data, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				for i := len(data) / 2; i < len(data)/2+16; i++ {
					data[i] ^= 0xff
				}
				if err := os.WriteFile(name, data, 0o644); err != nil {
					t.Fatal(err)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			inputs := e.uploadRange(t, series{n: 20}, groupLabels, start, start+5*range2h, c.hashes)
			bad := inputs[1]
			c.damage(t, blockDir(e, bad.ULID))

			e.runPipeline(t, planner.Config{}, 1, retentionDelay)

			waitFor(t, "the rest of the group compacted", func() bool {
				for _, r := range live(e.records(t)) {
					if r.MinTime == start+2*range2h && r.MaxTime == start+4*range2h && r.Level == 2 {
						return true
					}
				}
				return false
			})
			if rec := e.record(t, bad.ULID); rec.NoCompact != block.NoCompactCorrupt || rec.State != schemas.StateLive {
				t.Errorf("corrupt block: no-compact %q, state %s; want %q and live", rec.NoCompact, rec.State, block.NoCompactCorrupt)
			}
			if m := readNoCompactMark(t, e, bad.ULID); m.Reason != block.NoCompactCorrupt || m.Details == "" {
				t.Errorf("no-compact mark = %+v", m)
			}
			for _, in := range []schemas.BlockRecord{inputs[0], inputs[4]} {
				if rec := e.record(t, in.ULID); rec.State != schemas.StateLive {
					t.Errorf("block %s is %s, want live (alone in its run)", in.ULID, rec.State)
				}
			}
			dls, err := e.bus.DeadLetters(context.Background(), compact.Durable)
			if err != nil {
				t.Fatal(err)
			}
			if len(dls) != 1 || !strings.Contains(dls[0].Reason, bad.ULID.String()) || !strings.Contains(dls[0].Reason, "no-compact") {
				t.Errorf("dead letters = %+v, want one naming block %s", dls, bad.ULID)
			}
		})
	}
}
