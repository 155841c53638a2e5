package queryd

import (
	"context"
	"errors"
	"math"

	"github.com/prometheus/prometheus/storage"

	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/blockset"
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
		TSDBInfos:     tsdbInfos(snap.Ranges()),
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
	blocks, whole := blocksFor(src.s.Blocks(), mint, maxt, maxResolution)
	if !whole {
		return blocks.ChunkQuerier(mint, maxt)
	}
	return blocks.WholeChunkQuerier(mint, maxt)
}

// tsdbInfos returns the TSDB infos of the ranges of a snapshot.
func tsdbInfos(ranges []blockset.Range) []storeapi.TSDBInfo {
	var out []storeapi.TSDBInfo
	for _, r := range ranges {
		out = append(out, storeapi.TSDBInfo(r))
	}
	return out
}
