package storeapi

import (
	"context"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// WithExternalLabels returns q with the external labels ext attached to every series (an
// external label wins over a series label of the same name), as a Source must serve them.
// Matchers on external labels are evaluated against ext: a mismatch selects nothing, a
// match is dropped before q sees it. Selected series are re-sorted, since adding labels can
// change the order ({x="1"} < {x="1",y="1"}, but {x="1",y="1",z="1"} < {x="1",z="1"}).
func WithExternalLabels(q storage.ChunkQuerier, ext labels.Labels) storage.ChunkQuerier {
	if ext.IsEmpty() {
		return q
	}
	return &extQuerier{q: q, ext: ext}
}

type extQuerier struct {
	q   storage.ChunkQuerier
	ext labels.Labels
}

// matchAll matches every series: no series has a label with an empty name.
var matchAll = labels.MustNewMatcher(labels.MatchEqual, "", "")

// split evaluates the matchers on external labels and returns the others, or false when
// an external label does not match.
func (e *extQuerier) split(ms []*labels.Matcher) ([]*labels.Matcher, bool) {
	rest := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		if !e.ext.Has(m.Name) {
			rest = append(rest, m)
			continue
		}
		if !m.Matches(e.ext.Get(m.Name)) {
			return nil, false
		}
	}
	return rest, true
}

func (e *extQuerier) Select(ctx context.Context, sortSeries bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	rest, ok := e.split(ms)
	if !ok {
		return storage.EmptyChunkSeriesSet()
	}
	if len(rest) == 0 {
		rest = []*labels.Matcher{matchAll}
	}
	set := e.q.Select(ctx, sortSeries, hints, rest...)
	var series []storage.ChunkSeries
	b := labels.NewBuilder(labels.EmptyLabels())
	for set.Next() {
		s := set.At()
		b.Reset(s.Labels())
		e.ext.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		series = append(series, labeledChunkSeries{ChunkSeries: s, lset: b.Labels()})
	}
	if err := set.Err(); err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	if sortSeries {
		slices.SortStableFunc(series, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) })
	}
	return NewChunkSeriesList(series, set.Warnings())
}

func (e *extQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	rest, ok := e.split(ms)
	if !ok {
		return nil, nil, nil
	}
	names, warns, err := e.q.LabelNames(ctx, hints, rest...)
	if err != nil || len(names) == 0 {
		return names, warns, err
	}
	out := slices.Clone(names)
	e.ext.Range(func(l labels.Label) { out = append(out, l.Name) })
	slices.Sort(out)
	return slices.Compact(out), warns, nil
}

func (e *extQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	rest, ok := e.split(ms)
	if !ok {
		return nil, nil, nil
	}
	if !e.ext.Has(name) {
		return e.q.LabelValues(ctx, name, hints, rest...)
	}
	// An external label has its one value if any series matches.
	names, warns, err := e.q.LabelNames(ctx, nil, rest...)
	if err != nil || len(names) == 0 {
		return nil, warns, err
	}
	return []string{e.ext.Get(name)}, warns, nil
}

func (e *extQuerier) Close() error { return e.q.Close() }

type labeledChunkSeries struct {
	storage.ChunkSeries
	lset labels.Labels
}

func (s labeledChunkSeries) Labels() labels.Labels { return s.lset }

// NewChunkSeriesList returns a storage.ChunkSeriesSet over series, in their order, with warnings.
func NewChunkSeriesList(series []storage.ChunkSeries, warnings annotations.Annotations) storage.ChunkSeriesSet {
	return &chunkSeriesList{series: series, i: -1, warnings: warnings}
}

// chunkSeriesList is a storage.ChunkSeriesSet over a slice.
type chunkSeriesList struct {
	series   []storage.ChunkSeries
	i        int
	warnings annotations.Annotations
}

func (l *chunkSeriesList) Next() bool {
	l.i++
	return l.i < len(l.series)
}

func (l *chunkSeriesList) At() storage.ChunkSeries           { return l.series[l.i] }
func (l *chunkSeriesList) Err() error                        { return nil }
func (l *chunkSeriesList) Warnings() annotations.Annotations { return l.warnings }
