package planner

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// DefaultRanges are the compaction ranges, as Thanos plans with its default levels: 2h,
// 8h, 2d, 14d. Blocks of one group are merged into aligned blocks of these sizes, smallest
// first, so the chain is 2h → 8h (4 blocks) → 2d (6) → 14d (7).
var DefaultRanges = []int64{
	(2 * time.Hour).Milliseconds(),
	(8 * time.Hour).Milliseconds(),
	(48 * time.Hour).Milliseconds(),
	(14 * 24 * time.Hour).Milliseconds(),
}

// ParseRanges reads a --compact.ranges value: comma-separated durations ("2h,8h,2d,14d",
// with Prometheus' units: ms, s, m, h, d, w, y), ascending.
func ParseRanges(s string) ([]int64, error) {
	var out []int64
	for part := range strings.SplitSeq(s, ",") {
		d, err := model.ParseDuration(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("compaction range %q: %w", part, err)
		}
		out = append(out, time.Duration(d).Milliseconds())
	}
	if err := checkRanges(out); err != nil {
		return nil, err
	}
	return out, nil
}

func checkRanges(ranges []int64) error {
	if len(ranges) == 0 {
		return errors.New("no compaction ranges")
	}
	for i, r := range ranges {
		if r <= 0 || (i > 0 && r <= ranges[i-1]) {
			return fmt.Errorf("compaction ranges must be positive and ascending: %v", ranges)
		}
	}
	return nil
}

// Config is what a plan depends on besides the blocks.
type Config struct {
	// Ranges are the aligned compaction ranges in milliseconds, ascending (default
	// DefaultRanges).
	Ranges []int64
	// ReplicaLabels are dropped from the blocks' external labels before grouping, so the
	// blocks of HA replicas fall into one group, overlap, and are merged with penalty
	// deduplication (Thanos' --deduplication.func=penalty). If no label remains, the
	// group's labels are {<first replica label>="deduped"}. Without replica labels,
	// overlapping blocks are merged one to one (Prometheus' vertical compaction).
	ReplicaLabels []string
	// ConsistencyDelay keeps a block out of plans until it was uploaded this long ago,
	// unless blockflow uploaded or compacted it itself (it is then complete when
	// catalogued). It protects blocks adopted from a bucket others still write to.
	ConsistencyDelay time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Ranges) == 0 {
		c.Ranges = DefaultRanges
	}
	if err := checkRanges(c.Ranges); err != nil {
		return c, err
	}
	for _, l := range c.ReplicaLabels {
		if l == "" {
			return c, errors.New("empty replica label")
		}
	}
	if c.ConsistencyDelay < 0 {
		return c, fmt.Errorf("negative consistency delay %s", c.ConsistencyDelay)
	}
	return c, nil
}

// Result is a plan.
type Result struct {
	// Jobs are the compactions to run now, sorted by group, then time. Their inputs are
	// disjoint: they may run in parallel.
	Jobs []schemas.CompactJob
	// Wake is when a block now held back by the consistency delay becomes plannable (zero:
	// none is held back): plan again then.
	Wake time.Time
}

// Plan decides which compactions to run over the catalogue's blocks. It is a pure
// function: the same blocks, time and config always give the same jobs, with the same
// ids. Within each compaction group (resolution and external labels without replica
// labels) it applies the Thanos planner:
//   - blocks that are not live, have a no-compact mark, or are still in their consistency
//     delay are left out, as is a block whose compaction sources are all among another
//     live block's (it was compacted into that one, which is read instead);
//   - if blocks overlap in time, each maximal run of overlapping blocks is a job (vertical
//     compaction; with replica labels, the deduplication of replicas);
//   - otherwise the newest block (largest MinTime) is left alone, a window for late
//     blocks, and for each range R, smallest first, blocks are split into aligned
//     [k·R, (k+1)·R) buckets (a block that does not fit one is skipped); a bucket of 2 or
//     more blocks is compacted if its blocks span exactly R or it ends before the newest
//     remaining block starts. No-compact blocks stay in the buckets but split them: each
//     gap-free run of 2 or more blocks is a job. The first range with a job wins, so
//     every job of a group is of one level.
//
// Downsampled blocks (5m, 1h) are compacted by level too, but never vertically: as in
// Thanos, overlapping downsampled blocks are left out (their aggregates cannot be merged
// sample by sample).
func Plan(blocks []schemas.BlockRecord, now time.Time, cfg Config) (Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return Result{}, err
	}
	var (
		res        Result
		candidates []schemas.BlockRecord
	)
	for _, b := range blocks {
		if b.State != schemas.StateLive || len(b.Labels) == 0 {
			continue
		}
		if ready := readyAt(b, cfg.ConsistencyDelay); now.Before(ready) {
			if res.Wake.IsZero() || ready.Before(res.Wake) {
				res.Wake = ready
			}
			continue
		}
		candidates = append(candidates, b)
	}
	covered := Covered(candidates)

	groups := map[string][]schemas.BlockRecord{}
	groupLabels := map[string]map[string]string{}
	for _, b := range candidates {
		if covered[b.ULID] {
			continue
		}
		lbls := GroupLabels(b.Labels, cfg.ReplicaLabels)
		key := block.GroupKey(lbls, b.Resolution)
		groups[key] = append(groups[key], b)
		groupLabels[key] = lbls
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		g := groups[key]
		slices.SortFunc(g, byMinTime)
		runs, vertical := planGroup(g, cfg.Ranges, g[0].Resolution != schemas.ResRaw)
		for _, run := range runs {
			res.Jobs = append(res.Jobs, newJob(key, groupLabels[key], run, vertical, cfg))
		}
	}
	return res, nil
}

// uploadedHere reports whether blockflow wrote the block itself: its upload stage (which
// records the site) or a compactor. Such a block is complete once catalogued.
func uploadedHere(b schemas.BlockRecord) bool {
	return b.Site != "" || b.Source == block.SourceCompactor || b.Source == "compactor.repair" || b.Source == "bucket.repair"
}

// readyAt is when the consistency delay lets the block be planned: its upload time (or
// its ULID's time when the upload time is unknown) plus the delay.
func readyAt(b schemas.BlockRecord, delay time.Duration) time.Time {
	if delay == 0 || uploadedHere(b) {
		return time.Time{}
	}
	uploaded := b.UploadTime
	if uploaded == 0 {
		uploaded = int64(b.ULID.Time())
	}
	return time.UnixMilli(uploaded).Add(delay)
}

func byMinTime(a, b schemas.BlockRecord) int {
	if c := cmp.Compare(a.MinTime, b.MinTime); c != 0 {
		return c
	}
	return a.ULID.Compare(b.ULID)
}

// GroupLabels are the external labels of the compaction group of a block labelled l: l
// without the replica labels, or {<first replica label>="deduped"} if nothing remains.
func GroupLabels(l map[string]string, replicaLabels []string) map[string]string {
	out := make(map[string]string, len(l))
	for k, v := range l {
		if !slices.Contains(replicaLabels, k) {
			out[k] = v
		}
	}
	if len(out) == 0 && len(replicaLabels) > 0 {
		out[replicaLabels[0]] = "deduped"
	}
	return out
}

// GroupKey is block.GroupKey, for the tests that build jobs as the planner does.
func GroupKey(l map[string]string, resolution int64) string { return block.GroupKey(l, resolution) }

// Covered returns the blocks whose compaction sources are all among the sources of
// another block of the same resolution, as the Thanos dedup filter decides: blocks are
// taken by number of sources (most first), then ULID, and one is covered if a block taken
// before has all its sources. A covered block's data is in the covering one (a compaction
// committed its output and had not yet marked its inputs), so readers and planners use
// only the latter.
func Covered(blocks []schemas.BlockRecord) map[ulid.ULID]bool {
	byRes := map[int64][]schemas.BlockRecord{}
	for _, b := range blocks {
		byRes[b.Resolution] = append(byRes[b.Resolution], b)
	}
	covered := map[ulid.ULID]bool{}
	for _, bs := range byRes {
		var c block.Coverage
		kept := map[ulid.ULID]bool{}
		for _, b := range c.KeepUncovered(bs) {
			kept[b.ULID] = true
		}
		for _, b := range bs {
			if !kept[b.ULID] {
				covered[b.ULID] = true
			}
		}
	}
	return covered
}

// noCompactDownsampled is how a plan treats overlapping downsampled blocks (the reason
// Thanos writes in their no-compact marks).
const noCompactDownsampled = "downsample-vertical-compaction"

// planGroup plans one group's blocks, sorted by MinTime. It returns the runs of blocks to
// compact, and whether they are vertical compactions (overlapping blocks). Overlapping
// downsampled blocks are treated as marked no-compact.
func planGroup(blocks []schemas.BlockRecord, ranges []int64, downsampled bool) ([][]schemas.BlockRecord, bool) {
	var compactable []schemas.BlockRecord
	for _, b := range blocks {
		if b.NoCompact == "" {
			compactable = append(compactable, b)
		}
	}
	if runs := overlappingRuns(compactable); len(runs) > 0 {
		if !downsampled {
			return runs, true
		}
		overlapping := map[ulid.ULID]bool{}
		for _, run := range runs {
			for _, b := range run {
				overlapping[b.ULID] = true
			}
		}
		blocks = slices.Clone(blocks)
		for i := range blocks {
			if overlapping[blocks[i].ULID] {
				blocks[i].NoCompact = noCompactDownsampled
			}
		}
	}
	if len(blocks) == 0 {
		return nil, false
	}
	// Leave the newest block alone (no-compact or not): the next block of its range may
	// still arrive.
	return selectRanges(blocks[:len(blocks)-1], ranges), false
}

// overlappingRuns returns every maximal run of blocks (sorted by MinTime) that overlap
// the blocks before them in the run.
func overlappingRuns(blocks []schemas.BlockRecord) [][]schemas.BlockRecord {
	if len(blocks) < 2 {
		return nil
	}
	var (
		runs [][]schemas.BlockRecord
		cur  []schemas.BlockRecord
	)
	maxt := blocks[0].MaxTime
	for i := 1; i < len(blocks); i++ {
		b := blocks[i]
		switch {
		case b.MinTime < maxt:
			if len(cur) == 0 {
				cur = append(cur, blocks[i-1])
			}
			cur = append(cur, b)
		case len(cur) > 0:
			runs = append(runs, cur)
			cur = nil
		}
		maxt = max(maxt, b.MaxTime)
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	return runs
}

// selectRanges returns the runs to compact at the smallest range that has any; blocks
// are sorted by MinTime and do not overlap.
func selectRanges(blocks []schemas.BlockRecord, ranges []int64) [][]schemas.BlockRecord {
	if len(blocks) == 0 {
		return nil
	}
	highTime := blocks[len(blocks)-1].MinTime
	for _, r := range ranges {
		var out [][]schemas.BlockRecord
		for _, part := range splitByRange(blocks, r) {
			if len(part) < 2 {
				continue
			}
			mint, maxt := part[0].MinTime, part[len(part)-1].MaxTime
			if maxt-mint != r && maxt > highTime {
				continue
			}
			// No-compact blocks split the bucket; runs between them are compacted, so the
			// outputs keep the bucket's alignment and no gap opens.
			start := 0
			for i, b := range part {
				if b.NoCompact == "" {
					continue
				}
				if i-start > 1 {
					out = append(out, part[start:i])
				}
				start = i + 1
			}
			if len(part)-start > 1 {
				out = append(out, part[start:])
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// splitByRange splits blocks (sorted by MinTime) into the aligned buckets [k·r, (k+1)·r)
// that hold them whole; a block that fits no bucket (misaligned, or larger than r) is
// left out.
func splitByRange(blocks []schemas.BlockRecord, r int64) [][]schemas.BlockRecord {
	var parts [][]schemas.BlockRecord
	for i := 0; i < len(blocks); {
		t0 := floorDiv(blocks[i].MinTime, r) * r
		if blocks[i].MaxTime > t0+r {
			i++
			continue
		}
		var part []schemas.BlockRecord
		for ; i < len(blocks) && blocks[i].MaxTime <= t0+r; i++ {
			part = append(part, blocks[i])
		}
		parts = append(parts, part)
	}
	return parts
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// newJob makes the job that compacts run, blocks of the group key labelled lbls.
func newJob(key string, lbls map[string]string, run []schemas.BlockRecord, vertical bool, cfg Config) schemas.CompactJob {
	job := schemas.CompactJob{
		Version:    schemas.Version,
		Group:      key,
		Labels:     lbls,
		Resolution: run[0].Resolution,
	}
	for _, b := range run {
		job.Inputs = append(job.Inputs, schemas.BlockRef{ULID: b.ULID, MinTime: b.MinTime, MaxTime: b.MaxTime})
	}
	schemas.SortRefs(job.Inputs)
	if vertical && len(cfg.ReplicaLabels) > 0 {
		job.Deduplication = schemas.DedupPenalty
		job.ReplicaLabels = slices.Sorted(slices.Values(cfg.ReplicaLabels))
	}
	job.ID = schemas.CompactJobID(job.Inputs, job.Deduplication, job.ReplicaLabels)
	return job
}
