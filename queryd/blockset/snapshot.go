package blockset

import (
	"cmp"
	"slices"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/blockflow/blockflow/queryd/bucketblock"
)

// Snapshot is an immutable view of the queryable blocks at one moment; a query reads one
// snapshot from start to end.
type Snapshot struct {
	blocks []*bucketblock.Block // by MinTime, then ULID
	groups []*group
	ranges []Range
}

// group is the blocks of one external label set, by resolution.
type group struct {
	labels      labels.Labels
	resolutions []int64 // coarsest first
	byRes       map[int64][]*bucketblock.Block
	ranges      []Range // covered by its blocks of any resolution, half-open, by MinTime
}

// Range is a time range [MinTime, MaxTime] (inclusive) covered by the blocks of one
// external label set.
type Range struct {
	Labels           labels.Labels
	MinTime, MaxTime int64
}

func newSnapshot(blocks []*bucketblock.Block) *Snapshot {
	slices.SortFunc(blocks, byMinTime)
	s := &Snapshot{blocks: blocks}
	byLabels := map[string]*group{}
	for _, b := range blocks {
		k := b.Labels().String()
		g := byLabels[k]
		if g == nil {
			g = &group{labels: b.Labels(), byRes: map[int64][]*bucketblock.Block{}}
			byLabels[k] = g
			s.groups = append(s.groups, g)
		}
		if _, ok := g.byRes[b.Resolution()]; !ok {
			g.resolutions = append(g.resolutions, b.Resolution())
		}
		g.byRes[b.Resolution()] = append(g.byRes[b.Resolution()], b)
		g.cover(b)
	}
	for _, g := range s.groups {
		slices.SortFunc(g.resolutions, func(a, b int64) int { return cmp.Compare(b, a) })
		for _, r := range g.ranges {
			r.MaxTime-- // the blocks' MaxTime is exclusive
			s.ranges = append(s.ranges, r)
		}
	}
	slices.SortFunc(s.ranges, func(a, b Range) int {
		if c := labels.Compare(a.Labels, b.Labels); c != 0 {
			return c
		}
		return cmp.Compare(a.MinTime, b.MinTime)
	})
	return s
}

// cover adds the range of b, which starts no earlier than the blocks added before it, to
// g.ranges, merging it into the last range when they overlap or are adjacent.
func (g *group) cover(b *bucketblock.Block) {
	m := b.Meta() // [MinTime, MaxTime)
	if n := len(g.ranges); n > 0 && m.MinTime <= g.ranges[n-1].MaxTime {
		g.ranges[n-1].MaxTime = max(g.ranges[n-1].MaxTime, m.MaxTime)
		return
	}
	g.ranges = append(g.ranges, Range{Labels: g.labels, MinTime: m.MinTime, MaxTime: m.MaxTime})
}

func byMinTime(a, b *bucketblock.Block) int {
	if n := cmp.Compare(a.Meta().MinTime, b.Meta().MinTime); n != 0 {
		return n
	}
	return a.ID().Compare(b.ID())
}

// All returns every queryable block, of every resolution, by MinTime.
func (s *Snapshot) All() []*bucketblock.Block { return s.blocks }

// LabelSets returns the distinct external label sets of the queryable blocks.
func (s *Snapshot) LabelSets() []labels.Labels {
	out := make([]labels.Labels, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g.labels)
	}
	slices.SortFunc(out, labels.Compare)
	return out
}

// Ranges returns, per external label set, the time ranges its blocks of any resolution
// cover, adjacent and overlapping blocks merged into one range, sorted by labels then time.
func (s *Snapshot) Ranges() []Range { return s.ranges }

// TimeRange returns the smallest and largest timestamps (inclusive) of the queryable
// blocks; ok is false when there are none.
func (s *Snapshot) TimeRange() (mint, maxt int64, ok bool) {
	if len(s.blocks) == 0 {
		return 0, 0, false
	}
	mint, maxt = s.blocks[0].Meta().MinTime, s.blocks[0].Meta().MaxTime
	for _, b := range s.blocks[1:] {
		maxt = max(maxt, b.Meta().MaxTime)
	}
	return mint, maxt - 1, true
}

// For returns the blocks to read for [mint, maxt] (inclusive) when data may be as coarse
// as maxResolution milliseconds, as the Thanos store gateway chooses them: per label set,
// the coarsest resolution not above maxResolution, with the gaps it leaves filled from
// the next finer resolution, recursively. maxResolution 0 reads raw blocks only.
func (s *Snapshot) For(mint, maxt, maxResolution int64) []*bucketblock.Block {
	var out []*bucketblock.Block
	for _, g := range s.groups {
		// The first resolution not above maxResolution; resolutions are descending.
		i, _ := slices.BinarySearchFunc(g.resolutions, maxResolution, func(r, target int64) int { return cmp.Compare(target, r) })
		if i == len(g.resolutions) {
			continue
		}
		out = append(out, g.fill(mint, maxt, i)...)
	}
	slices.SortFunc(out, byMinTime)
	return out
}

func (g *group) fill(mint, maxt int64, i int) []*bucketblock.Block {
	if mint > maxt || i >= len(g.resolutions) {
		return nil
	}
	var out []*bucketblock.Block
	left := mint
	for _, b := range g.byRes[g.resolutions[i]] {
		m := b.Meta() // [MinTime, MaxTime)
		if m.MaxTime <= mint {
			continue
		}
		if m.MinTime > maxt {
			break
		}
		if m.MinTime > left {
			out = append(out, g.fill(left, m.MinTime-1, i+1)...)
		}
		out = append(out, b)
		left = max(left, m.MaxTime)
	}
	return append(out, g.fill(left, maxt, i+1)...)
}
