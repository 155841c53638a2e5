package synth

import (
	"math"
	"testing"
	"time"
)

// TestModels checks the shapes promtool and PromQL rely on: counters only go down at a
// restart, and a histogram's buckets are cumulative and reset together.
func TestModels(t *testing.T) {
	r := restarts{every: (4 * time.Hour).Milliseconds(), offset: (90 * time.Minute).Milliseconds()}
	c := counter{rate: 0.2, phase: 1, restarts: r}
	h := newLatencyHistogram(10, r, 3)
	g := gauge{mean: 6, amplitude: 4, noise: 2, step: 1, min: 0, key: 9}
	start := DefaultStart.UnixMilli()
	step := DefaultInterval.Milliseconds()
	prev, prevBuckets, buckets := -1.0, make([]float64, len(h.bounds)), make([]float64, len(h.bounds))
	resets := 0
	for ts := start; ts < start+(24*time.Hour).Milliseconds(); ts += step {
		restarted := r.last(ts) > ts-step
		v := c.at(ts)
		if v < prev && !restarted {
			t.Fatalf("counter fell from %v to %v at %d without a restart", prev, v, ts)
		}
		if restarted {
			resets++
		}
		prev = v

		sum := h.at(ts, buckets)
		for i := range buckets {
			if i > 0 && buckets[i] < buckets[i-1] {
				t.Fatalf("bucket le=%v holds %v < %v of the bucket before", h.bounds[i], buckets[i], buckets[i-1])
			}
			if buckets[i] < prevBuckets[i] && !restarted {
				t.Fatalf("bucket le=%v fell without a restart at %d", h.bounds[i], ts)
			}
		}
		if sum < 0 || (buckets[len(buckets)-1] > 0 && sum == 0) {
			t.Fatalf("_sum %v for _count %v", sum, buckets[len(buckets)-1])
		}
		copy(prevBuckets, buckets)

		if v := g.at(ts); v < 0 || v != math.Round(v) {
			t.Fatalf("inflight gauge %v is not a count", v)
		}
	}
	if resets != 6 {
		t.Errorf("%d restarts in 24h every 4h, want 6", resets)
	}
}
