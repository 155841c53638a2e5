package blockquery

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/util/annotations"
)

// blockQuerier reads one block for one query: it prunes the block by time and by
// external-label matchers, opens Prometheus' block querier (Q) on first use, and gives
// every series the block's external labels.
type blockQuerier[Q storage.LabelQuerier] struct {
	b          Block
	ext        labels.Labels
	mint, maxt int64
	newQuerier func(b tsdb.BlockReader, mint, maxt int64) (Q, error)

	mu     sync.Mutex
	q      Q
	opened bool
	err    error
	// release gives back what Prepare holds (the index), from Prepare until Close.
	release func()
}

func (bq *blockQuerier[Q]) isPrepared() bool {
	bq.mu.Lock()
	defer bq.mu.Unlock()
	return bq.release != nil
}

func (bq *blockQuerier[Q]) setPrepared(release func()) {
	bq.mu.Lock()
	defer bq.mu.Unlock()
	if bq.release != nil {
		release() // prepared twice by concurrent calls: one hold is enough
		return
	}
	bq.release = release
}

// querier opens the block querier once; later calls share it (or its error).
func (bq *blockQuerier[Q]) querier() (Q, error) {
	bq.mu.Lock()
	defer bq.mu.Unlock()
	if !bq.opened {
		bq.q, bq.err = bq.newQuerier(bq.b, bq.mint, bq.maxt)
		bq.opened = true
	}
	return bq.q, bq.err
}

// overlaps reports whether the block has data in [start, end]; blocks are [MinTime, MaxTime).
func (bq *blockQuerier[Q]) overlaps(start, end int64) bool {
	m := bq.b.Meta()
	return m.MinTime <= end && start < m.MaxTime
}

// matchers splits ms against the external labels: ok is false when one of them rules
// the block out; rest are the matchers the index must still evaluate (a matcher on an
// external label is decided here, since the external value wins over the series' own).
func (bq *blockQuerier[Q]) matchers(ms []*labels.Matcher) (rest []*labels.Matcher, ok bool) {
	rest = make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if !bq.ext.Has(m.Name) {
			rest = append(rest, m)
			continue
		}
		if !m.Matches(bq.ext.Get(m.Name)) {
			return nil, false
		}
	}
	return rest, true
}

// wants reports whether a call with these bounds and matchers reads the block's index.
func (bq *blockQuerier[Q]) wants(start, end int64, ms []*labels.Matcher) bool {
	if !bq.overlaps(start, end) {
		return false
	}
	_, ok := bq.matchers(ms)
	return ok
}

// selectMatchers are the matchers for a Select, or ok false when the block is pruned.
func (bq *blockQuerier[Q]) selectMatchers(hints *storage.SelectHints, ms []*labels.Matcher) ([]*labels.Matcher, bool) {
	start, end := bq.mint, bq.maxt
	if hints != nil {
		start, end = hints.Start, hints.End
	}
	if !bq.overlaps(start, end) {
		return nil, false
	}
	rest, ok := bq.matchers(ms)
	if ok && len(rest) == 0 {
		// Only external labels were matched: every series of the block.
		rest = append(rest, labels.MustNewMatcher(labels.MatchEqual, "", ""))
	}
	return rest, ok
}

func (bq *blockQuerier[Q]) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	rest, ok := bq.matchers(ms)
	if !ok {
		return nil, nil, nil
	}
	q, err := bq.querier()
	if err != nil {
		return nil, nil, err
	}
	if bq.ext.Has(name) {
		if len(rest) > 0 {
			// The block has the value only if some series matches.
			names, ws, err := q.LabelNames(ctx, &storage.LabelHints{Limit: 1}, rest...)
			if err != nil || len(names) == 0 {
				return nil, ws, err
			}
		}
		return []string{bq.ext.Get(name)}, nil, nil
	}
	values, ws, err := q.LabelValues(ctx, name, hints, rest...)
	return cloneStrings(values), ws, err
}

func (bq *blockQuerier[Q]) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	rest, ok := bq.matchers(ms)
	if !ok {
		return nil, nil, nil
	}
	q, err := bq.querier()
	if err != nil {
		return nil, nil, err
	}
	names, ws, err := q.LabelNames(ctx, hints, rest...)
	if err != nil || len(names) == 0 {
		return nil, ws, err
	}
	names = cloneStrings(names)
	bq.ext.Range(func(l labels.Label) { names = append(names, l.Name) })
	slices.Sort(names)
	names = slices.Compact(names)
	if hints != nil && hints.Limit > 0 && len(names) > hints.Limit {
		names = names[:hints.Limit]
	}
	return names, ws, nil
}

func (bq *blockQuerier[Q]) Close() error {
	bq.mu.Lock()
	defer bq.mu.Unlock()
	var err error
	if bq.opened && bq.err == nil {
		err = bq.q.Close()
	}
	if bq.release != nil {
		bq.release()
		bq.release = nil
	}
	return err
}

// withExternal returns lset with the external labels set, replacing its own on a clash.
func (bq *blockQuerier[Q]) withExternal(lset labels.Labels) labels.Labels {
	b := labels.NewBuilder(lset)
	bq.ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
	return b.Labels()
}

// cloneStrings copies strings that may point into an mmapped index, which can be unmapped
// once the querier is closed, while callers still hold the result.
func cloneStrings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.Clone(s)
	}
	return out
}

// sampleQuerier is a storage.Querier over one block.
type sampleQuerier struct {
	*blockQuerier[storage.Querier]
}

func (sq sampleQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	rest, ok := sq.selectMatchers(hints, ms)
	if !ok {
		return storage.EmptySeriesSet()
	}
	q, err := sq.querier()
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	return newExternalSet(q.Select(ctx, sortSeries, hints, rest...), sortSeries, func(s storage.Series) storage.Series {
		return &storage.SeriesEntry{Lset: sq.withExternal(s.Labels()), SampleIteratorFn: s.Iterator}
	})
}

// chunkQuerier is a storage.ChunkQuerier over one block.
type chunkQuerier struct {
	*blockQuerier[storage.ChunkQuerier]
}

func (cq chunkQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	rest, ok := cq.selectMatchers(hints, ms)
	if !ok {
		return storage.EmptyChunkSeriesSet()
	}
	q, err := cq.querier()
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	return newExternalSet(q.Select(ctx, sortSeries, hints, rest...), sortSeries, func(s storage.ChunkSeries) storage.ChunkSeries {
		return &storage.ChunkSeriesEntry{Lset: cq.withExternal(s.Labels()), ChunkIteratorFn: s.Iterator}
	})
}

// seriesSet is what storage.SeriesSet and storage.ChunkSeriesSet have in common.
type seriesSet[S interface{ Labels() labels.Labels }] interface {
	Next() bool
	At() S
	Err() error
	Warnings() annotations.Annotations
}

// externalSet relabels the series of one block. Adding labels can change the order of
// series ({a} < {a,b}, but {a,z} > {a,b,z}), so a sorted set is read whole and re-sorted.
type externalSet[S interface{ Labels() labels.Labels }] struct {
	in      seriesSet[S]
	relabel func(S) S
	sorted  bool

	buf  []S
	read bool
	cur  S
}

func newExternalSet[S interface{ Labels() labels.Labels }](in seriesSet[S], sorted bool, relabel func(S) S) *externalSet[S] {
	return &externalSet[S]{in: in, sorted: sorted, relabel: relabel}
}

func (s *externalSet[S]) Next() bool {
	if !s.sorted {
		if !s.in.Next() {
			return false
		}
		s.cur = s.relabel(s.in.At())
		return true
	}
	if !s.read {
		s.read = true
		for s.in.Next() {
			s.buf = append(s.buf, s.relabel(s.in.At()))
		}
		slices.SortFunc(s.buf, func(a, b S) int { return labels.Compare(a.Labels(), b.Labels()) })
	}
	if len(s.buf) == 0 {
		return false
	}
	s.cur, s.buf = s.buf[0], s.buf[1:]
	return true
}

func (s *externalSet[S]) At() S                             { return s.cur }
func (s *externalSet[S]) Err() error                        { return s.in.Err() }
func (s *externalSet[S]) Warnings() annotations.Annotations { return s.in.Warnings() }
