package queryd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/blockflow/blockflow/internal/dedup"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// Request parameters of the Thanos Querier's HTTP API.
const (
	paramDedup           = "dedup"
	paramPartialResponse = "partial_response"
	paramReplicaLabels   = "replicaLabels[]"
)

// globalQueryable is the global view PromQL reads: queryd's own blocks and the StoreAPI
// endpoints (sidecars for the newest data, other stores), queried in parallel and merged.
// With replica labels, series that differ only in them are one series, merged from its
// replicas with the penalty algorithm, wherever each replica's data comes from: a sidecar's
// head and the bucket's blocks of the other replica deduplicate as well as two sidecars.
type globalQueryable struct {
	local  storage.Queryable
	remote *storeapi.Queryable // nil without endpoints
	opts   storeapi.QueryOptions
}

func (g globalQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	local, err := g.local.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	if g.remote == nil && len(g.opts.ReplicaLabels) == 0 {
		return local, nil
	}
	qs := []storage.Querier{local}
	if g.remote != nil {
		// The endpoints strip replica labels themselves and apply the partial response
		// strategy: a failing endpoint is a warning (WARN) or an error (ABORT).
		remote, err := g.remote.With(g.opts).Querier(mint, maxt)
		if err != nil {
			local.Close()
			return nil, err
		}
		qs = append(qs, remote)
	}
	if len(g.opts.ReplicaLabels) == 0 {
		return storage.NewMergeQuerier(qs, nil, storage.ChainedSeriesMerge), nil
	}
	return &dedupQuerier{queriers: qs, replicaLabels: g.opts.ReplicaLabels}, nil
}

// requestOptions reads the Thanos Querier's per-request parameters from r's parsed form:
// dedup (default true), replicaLabels[] (default: the configured labels) and
// partial_response (default: as configured).
func requestOptions(r *http.Request, defaults storeapi.QueryOptions) (storeapi.QueryOptions, error) {
	opts := defaults
	if ls := r.Form[paramReplicaLabels]; len(ls) > 0 {
		opts.ReplicaLabels = ls
	}
	if v := r.FormValue(paramDedup); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return opts, fmt.Errorf("cannot parse parameter %s: %q is not a boolean", paramDedup, v)
		}
		if !on {
			opts.ReplicaLabels = nil
		}
	}
	if v := r.FormValue(paramPartialResponse); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return opts, fmt.Errorf("cannot parse parameter %s: %q is not a boolean", paramPartialResponse, v)
		}
		opts.PartialResponseStrategy = storepb.PartialResponseStrategy_ABORT
		if on {
			opts.PartialResponseStrategy = storepb.PartialResponseStrategy_WARN
		}
	}
	return opts, nil
}

// dedupQuerier strips the replica labels from the series of its queriers and merges the
// series left with equal labels as replicas of one another.
type dedupQuerier struct {
	queriers      []storage.Querier
	replicaLabels []string
}

func (d *dedupQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	// The own blocks and the endpoints are read in parallel.
	type selected struct {
		series []storage.Series
		warns  annotations.Annotations
		err    error
	}
	results := make([]selected, len(d.queriers))
	var wg sync.WaitGroup
	for i, q := range d.queriers {
		wg.Go(func() {
			set := q.Select(ctx, false, hints, ms...)
			var r selected
			for set.Next() {
				s := set.At()
				lset, _ := storeapi.StripLabels(s.Labels(), d.replicaLabels)
				r.series = append(r.series, &storage.SeriesEntry{Lset: lset, SampleIteratorFn: s.Iterator})
			}
			r.err, r.warns = set.Err(), set.Warnings()
			results[i] = r
		})
	}
	wg.Wait()
	var all []storage.Series
	var warns annotations.Annotations
	for _, r := range results {
		if r.err != nil {
			return storage.ErrSeriesSet(r.err)
		}
		all = append(all, r.series...)
		warns.Merge(r.warns)
	}
	// Stable: replicas keep the queriers' order, so ties go to the own blocks.
	slices.SortStableFunc(all, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })

	counter := hints != nil && dedup.IsCounterFunc(hints.Func)
	var out []storage.Series
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && labels.Equal(all[j].Labels(), all[i].Labels()) {
			j++
		}
		if j-i == 1 {
			out = append(out, all[i])
		} else {
			out = append(out, &replicaSeries{lset: all[i].Labels(), replicas: all[i:j], counter: counter})
		}
		i = j
		if hints != nil && hints.Limit > 0 && len(out) == hints.Limit {
			break
		}
	}
	return storeapi.NewSeriesList(out, warns)
}

func (d *dedupQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return d.union(hints, d.replicaLabels, func(q storage.Querier) ([]string, annotations.Annotations, error) {
		return q.LabelNames(ctx, hints, ms...)
	})
}

func (d *dedupQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	if slices.Contains(d.replicaLabels, name) {
		return nil, nil, nil // deduplicated away
	}
	return d.union(hints, nil, func(q storage.Querier) ([]string, annotations.Annotations, error) {
		return q.LabelValues(ctx, name, hints, ms...)
	})
}

// union returns the sorted union of what get returns for every querier, without exclude.
func (d *dedupQuerier) union(hints *storage.LabelHints, exclude []string, get func(storage.Querier) ([]string, annotations.Annotations, error)) ([]string, annotations.Annotations, error) {
	var all []string
	var warns annotations.Annotations
	for _, q := range d.queriers {
		vals, ws, err := get(q)
		warns.Merge(ws)
		if err != nil {
			return nil, warns, err
		}
		all = append(all, vals...)
	}
	var limit int64
	if hints != nil {
		limit = int64(hints.Limit)
	}
	return storeapi.SortedStrings(all, exclude, limit), warns, nil
}

func (d *dedupQuerier) Close() error {
	var errs []error
	for _, q := range d.queriers {
		errs = append(errs, q.Close())
	}
	return errors.Join(errs...)
}

// replicaSeries is one series served by several replicas (or sources), merged with the
// penalty algorithm; counters are adjusted so that switching replicas is not a reset.
type replicaSeries struct {
	lset     labels.Labels
	replicas []storage.Series
	counter  bool
}

func (s *replicaSeries) Labels() labels.Labels { return s.lset }

func (s *replicaSeries) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	its := make([]chunkenc.Iterator, len(s.replicas))
	for i, r := range s.replicas {
		its[i] = r.Iterator(nil)
	}
	return dedup.Merge(s.counter, its...)
}
