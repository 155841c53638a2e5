package blockset

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/oklog/ulid/v2"

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
		var c coverage
		out = append(out, c.keepUncovered(live)...)
		out = append(out, c.keepUncovered(marked)...)
	}
	return out
}

// sources are the level-1 blocks a block was made of; a level-1 block is its own source.
func sources(r schemas.BlockRecord) []ulid.ULID {
	if len(r.Sources) == 0 {
		return []ulid.ULID{r.ULID}
	}
	return r.Sources
}

// coverage is the union of kept blocks' source sets, indexed by source.
type coverage struct {
	kept     []map[ulid.ULID]struct{}
	bySource map[ulid.ULID][]int
}

// keepUncovered keeps, in dedup-filter order, each record whose sources are not all
// among the sources of one block kept before, and adds it to the coverage.
func (c *coverage) keepUncovered(recs []schemas.BlockRecord) []schemas.BlockRecord {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b schemas.BlockRecord) int {
		if n := cmp.Compare(len(sources(b)), len(sources(a))); n != 0 {
			return n
		}
		return a.ULID.Compare(b.ULID)
	})
	var out []schemas.BlockRecord
	for _, r := range recs {
		if c.covers(sources(r)) {
			continue
		}
		c.add(sources(r))
		out = append(out, r)
	}
	return out
}

func (c *coverage) covers(srcs []ulid.ULID) bool {
	for _, i := range c.bySource[srcs[0]] {
		all := true
		for _, s := range srcs[1:] {
			if _, ok := c.kept[i][s]; !ok {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

func (c *coverage) add(srcs []ulid.ULID) {
	if c.bySource == nil {
		c.bySource = map[ulid.ULID][]int{}
	}
	set := make(map[ulid.ULID]struct{}, len(srcs))
	for _, s := range srcs {
		set[s] = struct{}{}
		c.bySource[s] = append(c.bySource[s], len(c.kept))
	}
	c.kept = append(c.kept, set)
}
