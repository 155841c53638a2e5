// Package blockquery answers Prometheus storage queries over a set of bucket blocks:
// each block is read with Prometheus' own block querier, its series get the block's
// external labels, blocks ruled out by time or by an external-label matcher are never
// opened, and the same series from several blocks is merged into one.
package blockquery

import (
	"context"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"
	"golang.org/x/sync/errgroup"
)

// Block is a block a query can read.
type Block interface {
	tsdb.BlockReader
	// Labels are the block's external labels.
	Labels() labels.Labels
	// Prepare makes the block readable (fetches its index) within ctx, and keeps it
	// readable until release is called.
	Prepare(ctx context.Context) (release func(), err error)
}

// Queryable is a storage.Queryable and storage.ChunkQueryable over the blocks that
// blocks returns for a time range (a snapshot: the set may change between queries, never
// during one).
type Queryable[B Block] struct {
	blocks func(mint, maxt int64) []B
	// concurrency bounds how many blocks one call prepares at once.
	concurrency int
}

// NewQueryable returns a Queryable over blocks(mint, maxt), the blocks overlapping the
// inclusive range [mint, maxt].
func NewQueryable[B Block](blocks func(mint, maxt int64) []B) *Queryable[B] {
	return &Queryable[B]{blocks: blocks, concurrency: 8}
}

// Querier implements storage.Queryable.
func (qa *Queryable[B]) Querier(mint, maxt int64) (storage.Querier, error) {
	q := &querier[storage.Querier]{mint: mint, maxt: maxt, concurrency: qa.concurrency}
	var qs []storage.Querier
	for _, b := range qa.blocks(mint, maxt) {
		bq := &blockQuerier[storage.Querier]{b: b, ext: b.Labels(), mint: mint, maxt: maxt, newQuerier: tsdb.NewBlockQuerier}
		q.blocks = append(q.blocks, bq)
		qs = append(qs, sampleQuerier{bq})
	}
	q.merged = storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge)
	return sampleMerged{q}, nil
}

// ChunkQuerier implements storage.ChunkQueryable. Chunks of the same series from
// several blocks are concatenated; overlapping ones are merged sample by sample.
func (qa *Queryable[B]) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return qa.chunkQuerier(mint, maxt, storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge), false), nil
}

// WholeChunkQuerier is a storage.ChunkQuerier that hands out chunks as the blocks hold
// them, for downsampled (0xFF) chunks, which can be neither re-encoded nor merged sample
// by sample: chunks reaching outside the range selected are not trimmed, and the chunks
// of the same series from several blocks are concatenated, overlapping or not, in no
// particular order.
func (qa *Queryable[B]) WholeChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return qa.chunkQuerier(mint, maxt, storage.NewConcatenatingChunkSeriesMerger(), true), nil
}

func (qa *Queryable[B]) chunkQuerier(mint, maxt int64, merge storage.VerticalChunkSeriesMergeFunc, whole bool) storage.ChunkQuerier {
	q := &querier[storage.ChunkQuerier]{mint: mint, maxt: maxt, concurrency: qa.concurrency}
	var qs []storage.ChunkQuerier
	for _, b := range qa.blocks(mint, maxt) {
		bq := &blockQuerier[storage.ChunkQuerier]{b: b, ext: b.Labels(), mint: mint, maxt: maxt, newQuerier: tsdb.NewBlockChunkQuerier}
		q.blocks = append(q.blocks, bq)
		qs = append(qs, chunkQuerier{bq})
	}
	q.merged = storage.NewMergeChunkQuerier(qs, nil, merge)
	return chunkMerged{querier: q, whole: whole}
}

// querier is the blocks of one query and their merge (Q: storage.Querier or
// storage.ChunkQuerier).
type querier[Q storage.LabelQuerier] struct {
	mint, maxt  int64
	blocks      []*blockQuerier[Q]
	merged      Q
	concurrency int
}

// prepare fetches, in parallel, the indexes of the blocks a call will read, so a cold
// query waits for its downloads once rather than one after the other.
func (q *querier[Q]) prepare(ctx context.Context, start, end int64, ms []*labels.Matcher) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(q.concurrency)
	for _, bq := range q.blocks {
		if bq.isPrepared() || !bq.wants(start, end, ms) {
			continue
		}
		g.Go(func() error {
			release, err := bq.b.Prepare(gctx)
			if err != nil {
				return err
			}
			bq.setPrepared(release)
			return nil
		})
	}
	return g.Wait()
}

func (q *querier[Q]) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := q.prepare(ctx, q.mint, q.maxt, ms); err != nil {
		return nil, nil, err
	}
	return q.merged.LabelValues(ctx, name, hints, ms...)
}

func (q *querier[Q]) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if err := q.prepare(ctx, q.mint, q.maxt, ms); err != nil {
		return nil, nil, err
	}
	return q.merged.LabelNames(ctx, hints, ms...)
}

func (q *querier[Q]) Close() error { return q.merged.Close() }

// selectRange is the time range a Select reads.
func (q *querier[Q]) selectRange(hints *storage.SelectHints) (start, end int64) {
	if hints != nil {
		return hints.Start, hints.End
	}
	return q.mint, q.maxt
}

type sampleMerged struct{ *querier[storage.Querier] }

func (q sampleMerged) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	start, end := q.selectRange(hints)
	if err := q.prepare(ctx, start, end, ms); err != nil {
		return storage.ErrSeriesSet(err)
	}
	return q.merged.Select(ctx, sortSeries, hints, ms...)
}

type chunkMerged struct {
	*querier[storage.ChunkQuerier]
	whole bool // chunks are never trimmed
}

func (q chunkMerged) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	start, end := q.selectRange(hints)
	if err := q.prepare(ctx, start, end, ms); err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	if q.whole {
		h := storage.SelectHints{Start: start, End: end}
		if hints != nil {
			h = *hints
		}
		h.DisableTrimming = true
		hints = &h
	}
	return q.merged.Select(ctx, sortSeries, hints, ms...)
}
