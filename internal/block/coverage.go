package block

import (
	"cmp"
	"slices"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/schemas"
)

// Sources are the level-1 blocks a block was made of; a level-1 block is its own source.
func Sources(r schemas.BlockRecord) []ulid.ULID {
	if len(r.Sources) == 0 {
		return []ulid.ULID{r.ULID}
	}
	return r.Sources
}

// Coverage is the Thanos dedup filter's state: the source sets of the blocks kept so far,
// indexed by source. Its zero value is empty and ready to use.
type Coverage struct {
	kept     []map[ulid.ULID]struct{}
	bySource map[ulid.ULID][]int
}

// KeepUncovered takes recs by number of sources (most first), then ULID, and keeps each
// one whose sources are not all among the sources of one block kept before (its data is
// in that block: a compaction committed it and had not yet marked its inputs); kept
// blocks join the coverage.
func (c *Coverage) KeepUncovered(recs []schemas.BlockRecord) []schemas.BlockRecord {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b schemas.BlockRecord) int {
		if n := cmp.Compare(len(Sources(b)), len(Sources(a))); n != 0 {
			return n
		}
		return a.ULID.Compare(b.ULID)
	})
	var out []schemas.BlockRecord
	for _, r := range recs {
		if c.covers(Sources(r)) {
			continue
		}
		c.add(Sources(r))
		out = append(out, r)
	}
	return out
}

func (c *Coverage) covers(srcs []ulid.ULID) bool {
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

func (c *Coverage) add(srcs []ulid.ULID) {
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
