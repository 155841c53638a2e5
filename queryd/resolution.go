package queryd

import (
	"context"
	"errors"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/blockquery"
	"github.com/blockflow/blockflow/queryd/blockset"
	"github.com/blockflow/blockflow/queryd/bucketblock"
	"github.com/blockflow/blockflow/queryd/downsampled"
	"github.com/blockflow/blockflow/schemas"
)

// local is the Queryable of the own blocks for PromQL when data may be as coarse as
// maxResolution (ms); 0 is the raw data of s.queryable, read as ever.
func (s *Server) local(maxResolution int64) storage.Queryable {
	if maxResolution <= 0 {
		return s.queryable
	}
	return storage.QueryableFunc(func(mint, maxt int64) (storage.Querier, error) {
		snap := s.set.Snapshot()
		raw, err := rawBlocks(snap).Querier(mint, maxt)
		if err != nil {
			return nil, err
		}
		return &resolutionQuerier{snap: snap, mint: mint, maxt: maxt, maxResolution: maxResolution, raw: raw}, nil
	})
}

// rawBlocks reads the raw blocks of snap.
func rawBlocks(snap *blockset.Snapshot) *blockquery.Queryable[*bucketblock.Block] {
	return blockquery.NewQueryable(func(mint, maxt int64) []*bucketblock.Block {
		return snap.For(mint, maxt, schemas.ResRaw)
	})
}

// blocksFor reads the blocks snap.For picks for [mint, maxt] (inclusive) and maxResolution,
// whatever range is asked of it later, and reports whether they must be read whole-chunk:
// when any of them is downsampled, since the 0xFF chunks cannot be trimmed.
func blocksFor(snap *blockset.Snapshot, mint, maxt, maxResolution int64) (blocks *blockquery.Queryable[*bucketblock.Block], whole bool) {
	bs := snap.For(mint, maxt, maxResolution)
	for _, b := range bs {
		whole = whole || b.Resolution() > schemas.ResRaw
	}
	return blockquery.NewQueryable(func(int64, int64) []*bucketblock.Block { return bs }), whole
}

// resolutionQuerier reads, for each Select, the blocks of the coarsest resolution the
// selector may read (storeapi.SelectResolution: max_source_resolution, lowered for rate()
// and its kin), gaps filled from finer ones, as a Thanos Querier reading a store gateway
// does. Downsampled blocks yield the aggregate that the function around the selector asks
// for; raw blocks filling their gaps are read in the same series. Labels come from raw data.
type resolutionQuerier struct {
	snap          *blockset.Snapshot
	mint, maxt    int64
	maxResolution int64
	raw           storage.Querier

	mu sync.Mutex
	// opened are the queriers of Selects that read downsampled blocks, closed with q.
	opened []storage.ChunkQuerier
}

func (q *resolutionQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	h := storage.SelectHints{Start: q.mint, End: q.maxt}
	if hints != nil {
		h = *hints
	}
	res := storeapi.SelectResolution(q.maxResolution, hints)
	if res == schemas.ResRaw {
		return q.raw.Select(ctx, sortSeries, hints, ms...)
	}
	blocks, whole := blocksFor(q.snap, h.Start, h.End, res)
	if !whole {
		return q.raw.Select(ctx, sortSeries, hints, ms...)
	}
	cq, err := blocks.WholeChunkQuerier(q.mint, q.maxt)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	q.mu.Lock()
	q.opened = append(q.opened, cq)
	q.mu.Unlock()
	// Sorted: the same series of several blocks must come together to be merged.
	return downsampled.NewSeriesSet(cq.Select(ctx, true, &h, ms...), aggrchunk.AggrsForFunc(h.Func))
}

func (q *resolutionQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.raw.LabelValues(ctx, name, hints, ms...)
}

func (q *resolutionQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.raw.LabelNames(ctx, hints, ms...)
}

func (q *resolutionQuerier) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	errs := []error{q.raw.Close()}
	for _, cq := range q.opened {
		errs = append(errs, cq.Close())
	}
	q.opened = nil
	return errors.Join(errs...)
}
