// Package synth generates deterministic synthetic metrics: an OpenMetrics file for
// promtool's backfill, and TSDB blocks written directly, for the demo history and for
// tests and benchmarks. Every sample is a pure function of (seed, series, time), so any
// range can be generated on its own, in any order, and the same call always produces the
// same bytes.
package synth

import (
	"math"
	"time"
)

// DefaultStart is the first sample of generated data when no start is given: a fixed
// instant, so files and blocks are reproducible.
var DefaultStart = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	// DefaultInterval is the scrape interval of generated series.
	DefaultInterval = 15 * time.Second
	// DefaultBlockRange is the range of a level-1 Prometheus block.
	DefaultBlockRange = 2 * time.Hour

	daySeconds = 86400.0
	omega      = 2 * math.Pi / daySeconds // one cycle a day, in radians per second
)

// sampleFunc returns a series' value at t (milliseconds since the epoch).
type sampleFunc func(t int64) float64

// mix is splitmix64's finaliser: a stateless hash that turns (seed, series, time) into
// noise, which is what makes samples independent of generation order.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// unit maps a hash to [0, 1).
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// restarts is the schedule of a process's restarts, when its counters drop to zero.
type restarts struct {
	every, offset int64 // milliseconds; every must be > 0
}

// last returns the latest restart at or before t.
func (r restarts) last(t int64) int64 { return t - mod(t-r.offset, r.every) }

// counter is a monotonic counter whose rate follows a daily cycle between half and one
// and a half times its mean, and which starts from zero again at every restart.
type counter struct {
	rate     float64 // mean increase per second
	phase    float64 // radians
	restarts restarts
}

// increase is the integral of rate·(1 + ½·sin(ωs + phase)) over [from, to] in seconds: a
// closed form, so no sample depends on the ones before it.
func (c counter) increase(from, to int64) float64 {
	f, t := float64(from)/1000, float64(to)/1000
	return c.rate * ((t - f) - 0.5/omega*(math.Cos(omega*t+c.phase)-math.Cos(omega*f+c.phase)))
}

// at is the counter's value at t: whole events since the last restart. The integrand is
// at least rate/2 > 0, so the value never decreases between restarts.
func (c counter) at(t int64) float64 {
	return math.Floor(c.increase(c.restarts.last(t), t))
}

// gauge wanders around its mean on a daily cycle plus per-sample noise, rounded to step.
type gauge struct {
	mean, amplitude, noise, phase float64
	step                          float64 // rounding unit: 1 for counts, 0.01 for readings
	min                           float64 // values are clamped to at least min
	key                           uint64  // per-series noise key
}

func (g gauge) at(t int64) float64 {
	v := g.mean + g.amplitude*math.Sin(omega*float64(t)/1000+g.phase) +
		g.noise*(2*unit(mix(g.key^uint64(t)))-1)
	return math.Max(g.min, math.Round(v/g.step)*g.step)
}

// histogram is a classic histogram: each bucket's own (non-cumulative) count is a counter
// with its own daily phase, so the latency distribution shifts over the day while every
// cumulative bucket, _sum and _count stay monotonic and reset together at restarts.
type histogram struct {
	bounds []float64 // upper bounds, the last one +Inf
	parts  []counter // events falling into (bounds[i-1], bounds[i]]
	mids   []float64 // the value an event in part i adds to _sum
}

// latencyBounds are the upper bounds of the generated request latency histogram.
var latencyBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, math.Inf(1)}

// latencyShare is the share of requests in each latency bucket (sums to 1).
var latencyShare = []float64{0.02, 0.05, 0.13, 0.2, 0.25, 0.15, 0.1, 0.05, 0.03, 0.01, 0.007, 0.003}

func newLatencyHistogram(rate float64, r restarts, key uint64) histogram {
	h := histogram{bounds: latencyBounds}
	lower := 0.0
	for i, upper := range latencyBounds {
		phase := 2 * math.Pi * unit(mix(key+uint64(i)))
		h.parts = append(h.parts, counter{rate: rate * latencyShare[i], phase: phase, restarts: r})
		mid := (lower + upper) / 2
		if math.IsInf(upper, 1) {
			mid = 1.5 * lower
		}
		h.mids = append(h.mids, mid)
		lower = upper
	}
	return h
}

// at writes the cumulative bucket counts at t into buckets (one per bound; the last is
// _count) and returns _sum.
func (h histogram) at(t int64, buckets []float64) (sum float64) {
	var n float64
	for i, p := range h.parts {
		v := p.at(t)
		n += v
		buckets[i] = n
		sum += v * h.mids[i]
	}
	// Rounded to microseconds so the text form stays short.
	return math.Round(sum*1e6) / 1e6
}
