package planner_test

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/planner"
)

// ranges are the Thanos planner tests' levels without the block size: blocks of 20 merge
// into 60, 180, 540 and 1620.
var ranges = []int64{60, 180, 540, 1620}

var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// blk is a live raw block of group {cluster="a"}, uploaded by blockflow, whose ULID is
// numbered n.
func blk(n uint64, mint, maxt int64) schemas.BlockRecord {
	return schemas.BlockRecord{
		Version: schemas.Version, ULID: id(n), MinTime: mint, MaxTime: maxt,
		Labels: map[string]string{"cluster": "a"}, State: schemas.StateLive, Site: "site", Source: block.SourceSidecar,
		Level: 1,
	}
}

func id(n uint64) ulid.ULID { return ulid.MustNew(n, nil) }

func noCompact(b schemas.BlockRecord) schemas.BlockRecord {
	b.NoCompact = block.NoCompactManual
	return b
}

func res5m(b schemas.BlockRecord) schemas.BlockRecord {
	b.Resolution = schemas.Res5m
	return b
}

func with(b schemas.BlockRecord, edit func(*schemas.BlockRecord)) schemas.BlockRecord {
	edit(&b)
	return b
}

// TestPlanThanosRules checks the level planner against the rules of the Thanos planner
// (thanos.md §3.3), case by case as Thanos' and Prometheus' planner tests take them.
func TestPlanThanosRules(t *testing.T) {
	for _, c := range []struct {
		name   string
		blocks []schemas.BlockRecord
		want   [][]uint64 // each job's input ULID numbers, by MinTime
	}{
		{name: "one block: nothing to do", blocks: []schemas.BlockRecord{blk(1, 0, 20)}},
		{
			name:   "two blocks of a range: wait, the newest is left alone",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40)},
		},
		{
			name:   "three blocks: the newest is left alone and the other two neither fill the range nor end before it",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60)},
		},
		{
			name:   "a block of the next range appeared: the full range is compacted",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60), blk(4, 60, 80)},
			want:   [][]uint64{{1, 2, 3}},
		},
		{
			name:   "blocks fill the second range",
			blocks: []schemas.BlockRecord{blk(6, 0, 60), blk(7, 60, 120), blk(8, 120, 180), blk(9, 180, 200), blk(10, 200, 220)},
			want:   [][]uint64{{6, 7, 8}},
		},
		{
			name:   "a gap, and the block after it is the newest: nothing",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(4, 60, 80)},
		},
		{
			name:   "a gap the range will never fill: the blocks before the newest remaining one are compacted",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(4, 60, 80), blk(5, 80, 100)},
			want:   [][]uint64{{1, 2}},
		},
		{
			name:   "20, 20, 20, 60, 60: the smallest range first",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60), blk(4, 60, 120), blk(5, 120, 180)},
			want:   [][]uint64{{1, 2, 3}},
		},
		{
			name:   "a gap inside the second range",
			blocks: []schemas.BlockRecord{blk(6, 0, 60), blk(8, 120, 180), blk(9, 180, 200), blk(10, 200, 220)},
			want:   [][]uint64{{6, 8}},
		},
		{
			name: "two full buckets of the first range are two jobs; the full bucket of the next range waits",
			blocks: []schemas.BlockRecord{
				blk(1, 180, 200), blk(2, 200, 220), blk(3, 220, 240),
				blk(4, 240, 260), blk(5, 260, 280), blk(6, 280, 300),
				blk(7, 0, 60), blk(8, 60, 120), blk(9, 120, 180),
				blk(10, 300, 320),
			},
			want: [][]uint64{{1, 2, 3}, {4, 5, 6}},
		},
		{
			name:   "20, 60, 60 before a large block: compacted into the third range",
			blocks: []schemas.BlockRecord{blk(2, 20, 40), blk(4, 60, 120), blk(5, 960, 980), blk(6, 120, 180), blk(7, 720, 960)},
			want:   [][]uint64{{2, 4, 6}},
		},
		{
			name:   "the newest block is the one with the largest MinTime, not the newest ULID",
			blocks: []schemas.BlockRecord{blk(5, 0, 360), blk(6, 540, 560), blk(7, 360, 420), blk(8, 420, 540)},
			want:   [][]uint64{{7, 8}},
		},
		{
			name:   "overlap first: a run of two",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 19, 40), blk(3, 40, 60)},
			want:   [][]uint64{{1, 2}},
		},
		{
			name:   "overlap first: a run after a block that touches",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 30, 50)},
			want:   [][]uint64{{2, 3}},
		},
		{
			name:   "overlap first: a chain of three",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 10, 40), blk(3, 30, 50)},
			want:   [][]uint64{{1, 2, 3}},
		},
		{
			name:   "overlap first: blocks inside a larger one, the newest included",
			blocks: []schemas.BlockRecord{blk(5, 0, 360), blk(6, 340, 560), blk(7, 360, 420), blk(8, 420, 540)},
			want:   [][]uint64{{5, 6, 7, 8}},
		},
		{
			name:   "independent overlapping runs are separate jobs",
			blocks: []schemas.BlockRecord{blk(1, 0, 10), blk(2, 9, 20), blk(3, 17, 35), blk(4, 35, 50), blk(5, 47, 60)},
			want:   [][]uint64{{1, 2, 3}, {4, 5}},
		},
		// No-compact marks.
		{
			name:   "no-compact: a lone block",
			blocks: []schemas.BlockRecord{noCompact(blk(1, 0, 20))},
		},
		{
			name:   "no-compact: the first of a full range",
			blocks: []schemas.BlockRecord{noCompact(blk(1, 0, 20)), blk(2, 20, 40), blk(3, 40, 60), blk(4, 60, 80)},
			want:   [][]uint64{{2, 3}},
		},
		{
			name:   "no-compact: the second of a full range leaves runs of one",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), noCompact(blk(2, 20, 40)), blk(3, 40, 60), blk(4, 60, 80)},
		},
		{
			name:   "no-compact: the newest, left alone anyway",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60), noCompact(blk(4, 60, 80))},
			want:   [][]uint64{{1, 2, 3}},
		},
		{
			name:   "no-compact: the first and the newest",
			blocks: []schemas.BlockRecord{noCompact(blk(1, 0, 20)), blk(2, 20, 40), blk(3, 40, 60), noCompact(blk(4, 60, 80))},
			want:   [][]uint64{{2, 3}},
		},
		{
			name:   "no-compact: all of them",
			blocks: []schemas.BlockRecord{noCompact(blk(1, 0, 20)), noCompact(blk(2, 20, 40)), noCompact(blk(3, 40, 60)), noCompact(blk(4, 60, 80))},
		},
		{
			name:   "no-compact: a gap and a marked block",
			blocks: []schemas.BlockRecord{blk(1, 0, 20), noCompact(blk(2, 20, 40)), blk(4, 60, 80), blk(5, 80, 100)},
		},
		{
			name:   "no-compact: the last of the third-range bucket",
			blocks: []schemas.BlockRecord{blk(2, 20, 40), blk(4, 60, 120), blk(5, 960, 980), noCompact(blk(6, 120, 180)), blk(7, 720, 960)},
			want:   [][]uint64{{2, 4}},
		},
		{
			name:   "no-compact: the middle of the third-range bucket",
			blocks: []schemas.BlockRecord{blk(2, 20, 40), noCompact(blk(4, 60, 120)), blk(5, 960, 980), blk(6, 120, 180), blk(7, 720, 960)},
		},
		{
			name:   "no-compact: an overlap with a marked block is no overlap",
			blocks: []schemas.BlockRecord{noCompact(blk(1, 0, 20)), blk(2, 19, 40), blk(3, 40, 60)},
		},
		{
			name: "no-compact: a marked block in a second overlapping run",
			blocks: []schemas.BlockRecord{
				blk(1, 0, 20), blk(2, 19, 40), blk(3, 40, 60),
				noCompact(blk(4, 70, 80)), blk(5, 75, 90),
			},
			want: [][]uint64{{1, 2}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := planner.Plan(c.blocks, now, planner.Config{Ranges: ranges})
			if err != nil {
				t.Fatal(err)
			}
			if got := jobInputs(res.Jobs); !slices.EqualFunc(got, c.want, slices.Equal) {
				t.Errorf("plan = %v, want %v", got, c.want)
			}
			for _, j := range res.Jobs {
				if err := j.Validate(); err != nil {
					t.Errorf("job %v: %v", jobInputs([]schemas.CompactJob{j}), err)
				}
			}
		})
	}
}

// TestPlanBlockflowRules covers what blockflow adds around the level planner: groups,
// replica deduplication, catalogue states, coverage by sources, the consistency delay.
func TestPlanBlockflowRules(t *testing.T) {
	replica := func(b schemas.BlockRecord, r string) schemas.BlockRecord {
		return with(b, func(b *schemas.BlockRecord) { b.Labels = map[string]string{"cluster": "a", "replica": r} })
	}
	full := []schemas.BlockRecord{blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60), blk(4, 60, 80)}
	for _, c := range []struct {
		name          string
		blocks        []schemas.BlockRecord
		replicaLabels []string
		delay         time.Duration
		want          [][]uint64
		wantLabels    []map[string]string
		wantDedup     []string
		wantWake      time.Time
	}{
		{
			name: "groups are planned apart",
			blocks: append(slices.Clone(full),
				with(blk(11, 0, 20), func(b *schemas.BlockRecord) { b.Labels = map[string]string{"cluster": "b"} }),
				with(blk(12, 20, 40), func(b *schemas.BlockRecord) { b.Labels = map[string]string{"cluster": "b"} }),
			),
			want: [][]uint64{{1, 2, 3}},
		},
		{
			name: "replicas without replica labels are groups of their own",
			blocks: []schemas.BlockRecord{
				replica(blk(1, 0, 20), "x"), replica(blk(2, 20, 40), "x"),
				replica(blk(11, 0, 20), "y"), replica(blk(12, 20, 40), "y"),
			},
		},
		{
			name: "replica labels merge replicas: their blocks overlap and are deduplicated",
			blocks: []schemas.BlockRecord{
				replica(blk(1, 0, 20), "x"), replica(blk(2, 20, 40), "x"),
				replica(blk(11, 0, 20), "y"), replica(blk(12, 20, 40), "y"),
			},
			replicaLabels: []string{"replica"},
			want:          [][]uint64{{1, 11}, {2, 12}},
			wantLabels:    []map[string]string{{"cluster": "a"}, {"cluster": "a"}},
			wantDedup:     []string{schemas.DedupPenalty, schemas.DedupPenalty},
		},
		{
			name: "after deduplication the group compacts by level, without deduplication",
			blocks: append(slices.Clone(full[:3]),
				replica(blk(4, 60, 80), "x"), replica(blk(14, 60, 80), "y")),
			replicaLabels: []string{"replica"},
			want:          [][]uint64{{4, 14}},
		},
		{
			name: "level compaction of deduplicated blocks",
			blocks: []schemas.BlockRecord{
				blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60),
				with(blk(4, 60, 80), func(b *schemas.BlockRecord) { b.Labels = map[string]string{"cluster": "a", "replica": "x"} }),
			},
			replicaLabels: []string{"replica"},
			want:          [][]uint64{{1, 2, 3}},
			wantLabels:    []map[string]string{{"cluster": "a"}},
			wantDedup:     []string{schemas.DedupNone},
		},
		{
			name: "nothing left but replica labels: the group is labelled deduped",
			blocks: []schemas.BlockRecord{
				with(blk(1, 0, 20), func(b *schemas.BlockRecord) { b.Labels = map[string]string{"replica": "x"} }),
				with(blk(2, 0, 20), func(b *schemas.BlockRecord) { b.Labels = map[string]string{"replica": "y"} }),
			},
			replicaLabels: []string{"replica", "rule_replica"},
			want:          [][]uint64{{1, 2}},
			wantLabels:    []map[string]string{{"replica": "deduped"}},
			wantDedup:     []string{schemas.DedupPenalty},
		},
		{
			name: "marked, deleted and downsampled blocks are not planned",
			blocks: []schemas.BlockRecord{
				blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60), blk(4, 60, 80),
				with(blk(5, 0, 20), func(b *schemas.BlockRecord) { b.State = schemas.StateMarked }),
				with(blk(6, 10, 30), func(b *schemas.BlockRecord) { b.State = schemas.StateDeleted }),
				with(blk(7, 5, 15), func(b *schemas.BlockRecord) { b.Resolution = schemas.Res5m }),
				with(blk(8, 5, 15), func(b *schemas.BlockRecord) { b.Resolution = schemas.Res5m }),
			},
			want: [][]uint64{{1, 2, 3}},
		},
		{
			name: "downsampled blocks compact by level, in a group of their resolution",
			blocks: []schemas.BlockRecord{
				res5m(blk(1, 0, 20)), res5m(blk(2, 20, 40)), res5m(blk(3, 40, 60)), res5m(blk(4, 60, 80)),
				blk(11, 0, 20), blk(12, 20, 40),
			},
			want: [][]uint64{{1, 2, 3}},
		},
		{
			name: "overlapping downsampled blocks are left out, as if marked no-compact; the rest compacts",
			blocks: []schemas.BlockRecord{
				res5m(blk(1, 0, 20)), res5m(blk(2, 20, 40)), res5m(blk(3, 40, 60)), res5m(blk(4, 60, 80)), res5m(blk(5, 65, 75)),
			},
			want: [][]uint64{{1, 2, 3}},
		},
		{
			name: "a block covered by another's sources is not planned (a compaction committed, its inputs not yet marked)",
			blocks: append(slices.Clone(full),
				with(blk(9, 0, 60), func(b *schemas.BlockRecord) {
					b.Level, b.Sources, b.Source = 2, []ulid.ULID{id(1), id(2), id(3)}, block.SourceCompactor
				})),
		},
		{
			name: "consistency delay holds back a block blockflow did not upload",
			blocks: []schemas.BlockRecord{
				blk(1, 0, 20), blk(2, 20, 40), blk(3, 40, 60),
				with(blk(4, 60, 80), func(b *schemas.BlockRecord) {
					b.Site, b.UploadTime = "", now.Add(-10*time.Minute).UnixMilli()
				}),
			},
			delay:    30 * time.Minute,
			wantWake: now.Add(20 * time.Minute),
		},
		{
			name: "consistency delay falls back to the ULID time; compactor outputs are exempt",
			blocks: []schemas.BlockRecord{
				with(blk(1, 0, 20), func(b *schemas.BlockRecord) {
					b.Site, b.ULID = "", ulid.MustNew(uint64(now.Add(-time.Hour).UnixMilli()), nil)
				}),
				with(blk(2, 20, 40), func(b *schemas.BlockRecord) { b.Site, b.Source = "", block.SourceCompactor }),
				blk(3, 40, 60), blk(4, 60, 80),
			},
			delay: 30 * time.Minute,
			want:  [][]uint64{{uint64(now.Add(-time.Hour).UnixMilli()), 2, 3}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := planner.Plan(c.blocks, now, planner.Config{Ranges: ranges, ReplicaLabels: c.replicaLabels, ConsistencyDelay: c.delay})
			if err != nil {
				t.Fatal(err)
			}
			if got := jobInputs(res.Jobs); !slices.EqualFunc(got, c.want, slices.Equal) {
				t.Errorf("plan = %v, want %v", got, c.want)
			}
			for i, j := range res.Jobs {
				if err := j.Validate(); err != nil {
					t.Errorf("job %d: %v", i, err)
				}
				if c.wantLabels != nil && !maps.Equal(j.Labels, c.wantLabels[i]) {
					t.Errorf("job %d labels = %v, want %v", i, j.Labels, c.wantLabels[i])
				}
				if c.wantLabels != nil && j.Group != planner.GroupKey(c.wantLabels[i], 0) {
					t.Errorf("job %d group = %s, want the key of %v", i, j.Group, c.wantLabels[i])
				}
				if c.wantDedup != nil && j.Deduplication != c.wantDedup[i] {
					t.Errorf("job %d deduplication = %q, want %q", i, j.Deduplication, c.wantDedup[i])
				}
			}
			if !res.Wake.Equal(c.wantWake) {
				t.Errorf("wake = %v, want %v", res.Wake, c.wantWake)
			}
		})
	}
}

// TestPlanIsDeterministic: the same blocks in any order give the same jobs, ids and
// output ULIDs, so a re-plan never queues a second copy of a compaction.
func TestPlanIsDeterministic(t *testing.T) {
	var blocks []schemas.BlockRecord
	for i := range uint64(40) {
		blocks = append(blocks, blk(i+1, int64(i)*20, int64(i+1)*20))
	}
	first, err := planner.Plan(blocks, now, planner.Config{Ranges: ranges})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Jobs) == 0 {
		t.Fatal("no jobs")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10 {
		r.Shuffle(len(blocks), func(i, j int) { blocks[i], blocks[j] = blocks[j], blocks[i] })
		again, err := planner.Plan(blocks, now, planner.Config{Ranges: ranges})
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Jobs) != len(first.Jobs) {
			t.Fatalf("%d jobs, first time %d", len(again.Jobs), len(first.Jobs))
		}
		for i := range again.Jobs {
			a, b := again.Jobs[i], first.Jobs[i]
			oa, _ := a.OutputULID()
			ob, _ := b.OutputULID()
			if a.ID != b.ID || oa != ob {
				t.Fatalf("job %d: id %s output %s, first time %s %s", i, a.ID, oa, b.ID, ob)
			}
		}
	}
}

func TestParseRanges(t *testing.T) {
	got, err := planner.ParseRanges("2h, 8h,2d,14d")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, planner.DefaultRanges) {
		t.Errorf("ranges = %v, want %v", got, planner.DefaultRanges)
	}
	for _, bad := range []string{"", "2h,1h", "2h,2h", "0s", "2x"} {
		if _, err := planner.ParseRanges(bad); err == nil {
			t.Errorf("ParseRanges(%q) accepted", bad)
		}
	}
}

func jobInputs(jobs []schemas.CompactJob) [][]uint64 {
	var out [][]uint64
	for _, j := range jobs {
		var ids []uint64
		for _, in := range j.Inputs {
			ids = append(ids, in.ULID.Time())
		}
		out = append(out, ids)
	}
	return out
}
