package queryd

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/bucketblock"
)

// errNotReady is the StoreAPI's answer until the catalogue snapshot is loaded: a Querier
// must not take an empty block set for an empty bucket.
var errNotReady = errors.New("the block catalogue is still loading")

// storeSource serves queryd's own blocks over the StoreAPI, as a Thanos store gateway
// serves its bucket.
type storeSource struct{ s *Server }

func (src storeSource) Info(context.Context) (storeapi.Info, error) {
	if !src.s.Ready() {
		return storeapi.Info{}, errNotReady
	}
	snap := src.s.Blocks()
	info := storeapi.Info{
		ComponentType: "store",
		LabelSets:     snap.LabelSets(),
		MinTime:       math.MaxInt64,
		MaxTime:       math.MinInt64,
		TSDBInfos:     tsdbInfos(snap.All()),
	}
	if mint, maxt, ok := snap.TimeRange(); ok {
		info.MinTime, info.MaxTime = mint, maxt
	}
	return info, nil
}

// ChunkQuerier reads the blocks with their external labels, the same series of several
// blocks merged into one.
func (src storeSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return src.s.queryable.ChunkQuerier(mint, maxt)
}

// ChunkQuerierFor reads the blocks of the coarsest resolution not above maxResolution,
// gaps filled from finer ones, as the Thanos store gateway chooses them. When that takes
// downsampled blocks, every chunk is handed out whole, as the blocks hold it (the 0xFF
// chunks cannot be trimmed); otherwise the raw blocks are read as by ChunkQuerier.
func (src storeSource) ChunkQuerierFor(mint, maxt, maxResolution int64) (storage.ChunkQuerier, error) {
	blocks := src.s.Blocks().For(mint, maxt, maxResolution)
	if !anyDownsampled(blocks) {
		return fixedBlocks(blocks).ChunkQuerier(mint, maxt)
	}
	return fixedBlocks(blocks).WholeChunkQuerier(mint, maxt)
}

// tsdbInfos returns, per external label set, the time ranges its blocks cover, adjacent and
// overlapping blocks merged into one range (inclusive bounds), sorted by labels then time.
func tsdbInfos(blocks []*bucketblock.Block) []storeapi.TSDBInfo {
	byLabels := map[string][]*bucketblock.Block{}
	for _, b := range blocks {
		k := b.Labels().String()
		byLabels[k] = append(byLabels[k], b)
	}
	var out []storeapi.TSDBInfo
	for _, bs := range byLabels {
		slices.SortFunc(bs, func(a, b *bucketblock.Block) int { return cmp.Compare(a.Meta().MinTime, b.Meta().MinTime) })
		cur := storeapi.TSDBInfo{Labels: bs[0].Labels(), MinTime: bs[0].Meta().MinTime, MaxTime: bs[0].Meta().MaxTime}
		for _, b := range bs[1:] {
			m := b.Meta() // [MinTime, MaxTime)
			if m.MinTime <= cur.MaxTime {
				cur.MaxTime = max(cur.MaxTime, m.MaxTime)
				continue
			}
			out = append(out, inclusive(cur))
			cur = storeapi.TSDBInfo{Labels: b.Labels(), MinTime: m.MinTime, MaxTime: m.MaxTime}
		}
		out = append(out, inclusive(cur))
	}
	slices.SortFunc(out, func(a, b storeapi.TSDBInfo) int {
		if c := labels.Compare(a.Labels, b.Labels); c != 0 {
			return c
		}
		return cmp.Compare(a.MinTime, b.MinTime)
	})
	return out
}

// inclusive turns a half-open block range into the StoreAPI's inclusive one.
func inclusive(ti storeapi.TSDBInfo) storeapi.TSDBInfo {
	ti.MaxTime--
	return ti
}
