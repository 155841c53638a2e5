package synth

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
)

// DefaultDemoSpan is how much history `blockflow dev --demo` writes.
const DefaultDemoSpan = 16 * 24 * time.Hour

// demoInstances is how many instances of the test API the demo history has.
const demoInstances = 3

// WriteDemoBlocks writes the history of a small test API into dir as level-1 blocks, one
// per 2h-aligned range, covering span (default DefaultDemoSpan, rounded up to whole
// ranges) up to now rounded down to 2h: the range still in Prometheus' head is left out.
// Series:
//
//	request_count_total{job="test-api",instance="test-api-<n>:8080",status="200"|"500"}
//	test_api_inflight_requests{job="test-api",instance="test-api-<n>:8080"}
//
// scraped every 15s; the counters reset when their instance restarts (every 8 to 14
// hours). Samples and block ULIDs depend only on time, and time that blocks in dir already
// cover is left alone, so a later call adds only what is new. It returns the metas of the
// blocks in dir over the span, in time order.
func WriteDemoBlocks(ctx context.Context, dir string, now time.Time, span time.Duration) ([]tsdb.BlockMeta, error) {
	if span == 0 {
		span = DefaultDemoSpan
	}
	if span < 0 {
		return nil, fmt.Errorf("demo blocks: negative span %s", span)
	}
	blockRange := DefaultBlockRange.Milliseconds()
	end := floorTo(now.UnixMilli(), blockRange)
	metas, err := demoSet(end-ceilTo(span.Milliseconds(), blockRange), end).write(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("demo blocks: %w", err)
	}
	return metas, nil
}

// WriteDemoRecent writes the demo samples of [from, now) that no block in dir covers yet,
// as small blocks that never cross a 2h boundary, standing in for the blocks a live
// Prometheus would cut. A zero from means the start of the current 2h range, where
// WriteDemoBlocks stops. It returns the meta of the newest block over the range; its
// MaxTime is where the next call should start. When there is nothing to write (no sample
// since from) it returns a meta without ULID whose MaxTime is from.
func WriteDemoRecent(ctx context.Context, dir string, from, now time.Time) (tsdb.BlockMeta, error) {
	end := now.UnixMilli()
	start := floorTo(end, DefaultBlockRange.Milliseconds())
	if !from.IsZero() {
		start = from.UnixMilli()
	}
	nothing := tsdb.BlockMeta{MinTime: start, MaxTime: start}
	if start >= end {
		return nothing, nil
	}
	metas, err := demoSet(start, end).write(ctx, dir)
	if err != nil {
		return nothing, fmt.Errorf("demo blocks: %w", err)
	}
	if len(metas) == 0 {
		return nothing, nil
	}
	return metas[len(metas)-1], nil
}

// demoSet is the test API's series over [mint, maxt).
func demoSet(mint, maxt int64) blockSet {
	set := blockSet{
		mint: mint, maxt: maxt,
		blockRange: DefaultBlockRange.Milliseconds(),
		interval:   DefaultInterval.Milliseconds(),
		key:        mix(hashString("test-api")),
	}
	for i := range demoInstances {
		key := mix(set.key ^ uint64(i+1))
		instance := fmt.Sprintf("test-api-%d:8080", i)
		r := restarts{
			every:  (8*3600 + int64(unit(key)*6*3600)) * 1000,
			offset: int64(unit(mix(key)) * 86400e3),
		}
		// Targets of one job are scraped at different offsets within the interval.
		offset := int64(i) * set.interval / demoInstances
		for j, st := range []struct {
			code string
			rate float64
		}{{"200", 25}, {"500", 0.3}} {
			c := counter{
				rate:     st.rate * (0.8 + 0.4*unit(mix(key+uint64(j)))),
				phase:    2 * math.Pi * unit(mix(key+uint64(j)+10)),
				restarts: r,
			}
			set.series = append(set.series, genSeries{
				lset:   labels.FromStrings(model.MetricNameLabel, "request_count_total", "job", "test-api", "instance", instance, "status", st.code),
				at:     c.at,
				offset: offset,
			})
		}
		g := gauge{mean: 6, amplitude: 4, noise: 2, phase: 2 * math.Pi * unit(mix(key+20)), step: 1, min: 0, key: key}
		set.series = append(set.series, genSeries{
			lset:   labels.FromStrings(model.MetricNameLabel, "test_api_inflight_requests", "job", "test-api", "instance", instance),
			at:     g.at,
			offset: offset,
		})
	}
	return set
}
