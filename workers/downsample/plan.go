package downsample

import (
	"slices"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// Minimum block spans (maxTime − minTime, milliseconds) for downsampling, as in Thanos: a
// raw block becomes 5m data once it spans 40h, a 5m block becomes 1h data once it spans 10
// days. In practice that means the 2d and 14d compacted blocks.
const (
	MinSpan5m int64 = 40 * 3600 * 1000
	MinSpan1h int64 = 10 * 24 * 3600 * 1000
)

// Plan is Thanos' downsampling selection over the catalogue: a live raw block that spans at
// least MinSpan5m gets a 5m job, and a live 5m block that spans at least MinSpan1h gets a 1h
// job, unless it carries a no-downsample mark or every one of its sources is already among
// the sources of the existing (not deleted) blocks at the target resolution. Jobs come in
// input ULID order. A job whose output exists is planned again until the output is in
// records; the worker then finds the output in the bucket and only records it.
func Plan(records []schemas.BlockRecord) []schemas.DownsampleJob {
	covered := map[int64]map[ulid.ULID]bool{schemas.Res5m: {}, schemas.Res1h: {}}
	for _, r := range records {
		if done, ok := covered[r.Resolution]; ok && r.State != schemas.StateDeleted {
			for _, s := range r.Sources {
				done[s] = true
			}
		}
	}
	var jobs []schemas.DownsampleJob
	for _, r := range records {
		if r.State != schemas.StateLive || r.NoDownsample != "" {
			continue
		}
		var target, minSpan int64
		switch r.Resolution {
		case schemas.ResRaw:
			target, minSpan = schemas.Res5m, MinSpan5m
		case schemas.Res5m:
			target, minSpan = schemas.Res1h, MinSpan1h
		default:
			continue
		}
		if r.MaxTime-r.MinTime < minSpan || allCovered(r.Sources, covered[target]) {
			continue
		}
		jobs = append(jobs, schemas.DownsampleJob{
			Version:    schemas.Version,
			ID:         schemas.DownsampleJobID(r.ULID, target),
			Group:      GroupKey(r),
			Input:      r,
			Resolution: target,
		})
	}
	slices.SortFunc(jobs, func(a, b schemas.DownsampleJob) int { return a.Input.ULID.Compare(b.Input.ULID) })
	return jobs
}

func allCovered(sources []ulid.ULID, done map[ulid.ULID]bool) bool {
	for _, s := range sources {
		if !done[s] {
			return false
		}
	}
	return len(sources) > 0
}

// GroupKey is r's compaction group, block.GroupKey.
func GroupKey(r schemas.BlockRecord) string { return block.GroupKey(r.Labels, r.Resolution) }
