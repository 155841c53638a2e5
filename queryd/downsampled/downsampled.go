// Package downsampled answers PromQL over downsampled blocks as Thanos' querier does: the
// function wrapping a selector (SelectHints.Func) picks the aggregate each 0xFF chunk yields
// — min_* the minima, max_* the maxima, count_* the counts, sum_* the sums, rate, increase,
// irate and resets the counter with resets applied across chunks — and anything else gets
// the window averages sum/count. Raw chunks among them yield their own samples.
//
// Blocks must be opened with aggrchunk.NewPool so that their chunk reader returns 0xFF
// chunks. Chunks are read whole (never trimmed to the query range, which would re-encode
// them as samples); the engine ignores samples outside its range.
package downsampled

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/blockflow/blockflow/internal/aggrchunk"
)

// Queryable is a storage.Queryable over the downsampled blocks that blocks returns for a
// time range. The same series in several blocks is one series, its chunks in time order.
type Queryable struct {
	blocks func(mint, maxt int64) []tsdb.BlockReader
}

// NewQueryable returns a Queryable over blocks(mint, maxt), the blocks overlapping the
// inclusive range [mint, maxt].
func NewQueryable(blocks func(mint, maxt int64) []tsdb.BlockReader) *Queryable {
	return &Queryable{blocks: blocks}
}

// Querier implements storage.Queryable.
func (q *Queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	var qs []storage.ChunkQuerier
	for _, b := range q.blocks(mint, maxt) {
		cq, err := tsdb.NewBlockChunkQuerier(b, mint, maxt)
		if err != nil {
			for _, open := range qs {
				open.Close()
			}
			return nil, fmt.Errorf("block %s: %w", b.Meta().ULID, err)
		}
		qs = append(qs, cq)
	}
	return &querier{
		mint:   mint,
		maxt:   maxt,
		chunks: storage.NewMergeChunkQuerier(qs, nil, storage.NewConcatenatingChunkSeriesMerger()),
	}, nil
}

type querier struct {
	mint, maxt int64
	chunks     storage.ChunkQuerier
}

// Select implements storage.Querier.
func (q *querier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	h := storage.SelectHints{Start: q.mint, End: q.maxt}
	if hints != nil {
		h = *hints
	}
	h.DisableTrimming = true
	// Series are always sorted: merging blocks needs it, and it costs nothing here.
	return NewSeriesSet(q.chunks.Select(ctx, true, &h, ms...), aggrchunk.AggrsForFunc(h.Func))
}

// LabelValues implements storage.Querier.
func (q *querier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.chunks.LabelValues(ctx, name, hints, ms...)
}

// LabelNames implements storage.Querier.
func (q *querier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return q.chunks.LabelNames(ctx, hints, ms...)
}

// Close implements storage.Querier.
func (q *querier) Close() error { return q.chunks.Close() }

// NewSeriesSet reads the chunk series of css, whose chunks may be 0xFF chunks, as the
// samples of aggrs (from aggrchunk.AggrsForFunc). A StoreAPI client can use it too, after
// re-encoding a response's aggregates with aggrchunk.Encode.
func NewSeriesSet(css storage.ChunkSeriesSet, aggrs []aggrchunk.Aggr) storage.SeriesSet {
	return &seriesSet{css: css, aggrs: aggrs}
}

type seriesSet struct {
	css   storage.ChunkSeriesSet
	aggrs []aggrchunk.Aggr
}

func (s *seriesSet) Next() bool { return s.css.Next() }

func (s *seriesSet) At() storage.Series {
	return &series{cs: s.css.At(), aggrs: s.aggrs}
}

func (s *seriesSet) Err() error                        { return s.css.Err() }
func (s *seriesSet) Warnings() annotations.Annotations { return s.css.Warnings() }

type series struct {
	cs    storage.ChunkSeries
	aggrs []aggrchunk.Aggr
}

func (s *series) Labels() labels.Labels { return s.cs.Labels() }

// Iterator reads the series' chunks in time order; blocks merged into one series may hand
// them over out of order.
func (s *series) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	var metas []chunks.Meta
	it := s.cs.Iterator(nil)
	for it.Next() {
		metas = append(metas, it.At())
	}
	if err := it.Err(); err != nil {
		return aggrchunk.ErrIterator(fmt.Errorf("series %s: %w", s.cs.Labels(), err))
	}
	slices.SortStableFunc(metas, func(a, b chunks.Meta) int { return cmp.Compare(a.MinTime, b.MinTime) })
	chks := make([]chunkenc.Chunk, len(metas))
	for i, m := range metas {
		chks[i] = m.Chunk
	}
	return aggrchunk.SeriesIterator(chks, s.aggrs)
}
