package compact_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/planner"
)

// TestPipelineCompactsHAReplicas runs the planner, a pool of two compaction slots and
// retention over 50h of 2h blocks from two HA replicas, each with a gap the other fills.
// The replicas are deduplicated (2h), then compacted to 8h and 2d blocks; the newest 2h
// range stays as it is (the planner leaves the newest block alone, so a 2d range closes
// once a block of the next one exists). Deduplicating PromQL answers are the same before
// and after, the outputs open with the Prometheus TSDB package and do not overlap.
func TestPipelineCompactsHAReplicas(t *testing.T) {
	e := newEnv(t)
	end := start + 50*hour
	replicas := map[string]series{
		"a": {n: 12, gaps: [][2]int64{{start + 10*hour, start + 11*hour}}},
		"b": {n: 12, gaps: [][2]int64{{start + 30*hour, start + 30*hour + 20*60_000}, {start + 49*hour, start + 49*hour + 30*60_000}}},
	}
	var inputDirs []string
	for r, s := range replicas {
		for _, rec := range e.uploadRange(t, s, map[string]string{"cluster": "eu", "replica": r}, start, end, true) {
			inputDirs = append(inputDirs, blockDir(e, rec.ULID))
		}
	}
	var queries []query
	for _, at := range []int64{start + 5*hour, start + 10*hour + 30*60_000, start + 30*hour + 10*60_000, start + 49*hour + 15*60_000, end - 1} {
		queries = append(queries, query{expr: "test_requests_total", start: at})
	}
	queries = append(queries,
		query{expr: "rate(test_requests_total[5m])", start: start, end: end, step: 10 * time.Minute},
		query{expr: "sum by (job) (increase(test_requests_total[1h]))", start: start + hour, end: end, step: 30 * time.Minute},
		query{expr: "count(test_requests_total)", start: start, end: end, step: time.Hour},
	)
	before := answers(t, dedupQueryable(t, openBlocks(t, inputDirs), []string{"replica"}), queries)
	for i, a := range before {
		if !strings.Contains(a, "=>") || strings.Contains(a, "replica") {
			t.Fatalf("%s: answer before compaction is empty or not deduplicated: %.200s", queries[i].expr, a)
		}
	}

	e.runPipeline(t, planner.Config{ReplicaLabels: []string{"replica"}}, 2, 0)

	groupLabels := map[string]string{"cluster": "eu"}
	var final []schemas.BlockRecord
	waitFor(t, "a 2d block and the newest 2h range, everything else deleted", func() bool {
		recs := e.records(t)
		final = live(recs)
		for _, r := range recs {
			if r.State == schemas.StateMarked {
				return false
			}
		}
		return len(final) == 2 &&
			final[0].MinTime == start && final[0].MaxTime == start+48*hour &&
			final[1].MinTime == start+48*hour && final[1].MaxTime == end
	})

	for i, r := range final {
		if !maps.Equal(r.Labels, groupLabels) {
			t.Errorf("output %d labels %v, want %v (the replica label dropped)", i, r.Labels, groupLabels)
		}
	}
	if got := len(final[0].Sources); got != 48 {
		t.Errorf("the 2d block has %d sources, want 48 (24 ranges × 2 replicas)", got)
	}
	if final[0].Level != 4 || final[1].Level != 2 {
		t.Errorf("levels %d and %d, want 4 (2h dedup, 8h, 2d) and 2", final[0].Level, final[1].Level)
	}
	// The intermediate 8h blocks existed and are gone, as are the inputs.
	var eightHours, deleted int
	for _, r := range e.records(t) {
		if r.State == schemas.StateDeleted {
			deleted++
			if r.MaxTime-r.MinTime == 8*hour {
				eightHours++
			}
		}
	}
	if eightHours != 6 {
		t.Errorf("%d 8h blocks were made and deleted, want 6", eightHours)
	}
	// 50 inputs, 25 deduplicated 2h blocks (one remains), 6 8h blocks.
	if deleted != 50+24+6 {
		t.Errorf("%d blocks deleted, want %d", deleted, 50+24+6)
	}

	// The bucket holds the two outputs and nothing else.
	var dirs []string
	if err := e.bkt.Iter(context.Background(), "", false, func(name string) error {
		dirs = append(dirs, strings.TrimSuffix(name, "/"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 || !containsULID(dirs, final[0].ULID) || !containsULID(dirs, final[1].ULID) {
		t.Errorf("bucket holds %v, want only %s and %s", dirs, final[0].ULID, final[1].ULID)
	}

	outputs := openBlocks(t, []string{blockDir(e, final[0].ULID), blockDir(e, final[1].ULID)})
	if a, b := outputs[0].Meta(), outputs[1].Meta(); a.MaxTime > b.MinTime {
		t.Errorf("outputs overlap: [%d, %d) and [%d, %d)", a.MinTime, a.MaxTime, b.MinTime, b.MaxTime)
	}
	after := answers(t, dedupQueryable(t, outputs, []string{"replica"}), queries)
	for i := range queries {
		if before[i] != after[i] {
			t.Errorf("%s at %d: answers differ after compaction\nbefore: %.400s\nafter:  %.400s", queries[i].expr, queries[i].start, before[i], after[i])
		}
	}
}

func containsULID(names []string, id ulid.ULID) bool {
	for _, n := range names {
		if n == id.String() {
			return true
		}
	}
	return false
}
