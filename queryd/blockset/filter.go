package blockset

import (
	"strconv"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// queryable returns the records that queries read, in no particular order. Within one
// resolution (not one label set: source ULIDs are unique, and a compaction that
// deduplicates HA replicas writes an output whose labels lack the replica label, which
// must still hide its inputs):
//   - live blocks pass the Thanos dedup filter: by number of sources (most first), then
//     ULID, a block whose sources are all among the sources of a block kept before is
//     hidden (it was compacted into that one);
//   - a marked block stays until a kept block covers its sources, so a query never sees
//     a gap while a compaction's output and its marked inputs are both catalogued; marked
//     blocks covering each other are filtered the same way.
func queryable(recs []schemas.BlockRecord) []schemas.BlockRecord {
	groups := map[string][]schemas.BlockRecord{}
	var keys []string
	for _, r := range recs {
		if r.State == schemas.StateDeleted {
			continue
		}
		k := strconv.FormatInt(r.Resolution, 10)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []schemas.BlockRecord
	for _, k := range keys {
		var live, marked []schemas.BlockRecord
		for _, r := range groups[k] {
			if r.State == schemas.StateLive {
				live = append(live, r)
			} else {
				marked = append(marked, r)
			}
		}
		var c block.Coverage
		out = append(out, c.KeepUncovered(live)...)
		out = append(out, c.KeepUncovered(marked)...)
	}
	return out
}
