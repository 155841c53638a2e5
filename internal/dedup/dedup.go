// Package dedup merges the replicas of one series, as scraped by an HA group of Prometheus
// servers, into one sample stream with the penalty algorithm of the Thanos Querier: it sticks
// to one replica and switches only when that replica has a gap of about twice its sample
// interval, so the merged stream keeps one replica's cadence instead of interleaving both.
package dedup

import (
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// initialPenalty (ms) is added to the seek of the replica not picked for the first sample,
// before any interval is known; scrape intervals are seconds long.
const initialPenalty = 5000

// IsCounterFunc reports whether the PromQL function fn (storage.SelectHints.Func) reads
// counters, so that its replicas must be merged with NewCounterIterator.
func IsCounterFunc(fn string) bool {
	switch fn {
	case "rate", "increase", "irate", "resets":
		return true
	}
	return false
}

// NewIterator merges replicas with the penalty algorithm. N replicas are folded left in
// pairs: merge(merge(r0, r1), r2)…
func NewIterator(replicas ...chunkenc.Iterator) chunkenc.Iterator {
	return fold(replicas, func(it chunkenc.Iterator) adjustable { return plain{it} })
}

// NewCounterIterator is NewIterator for counters: when the merged stream switches to a
// replica whose value is below the last value emitted, the difference is added to all
// further values of that replica, so the switch does not look like a counter reset.
func NewCounterIterator(replicas ...chunkenc.Iterator) chunkenc.Iterator {
	return fold(replicas, func(it chunkenc.Iterator) adjustable { return &counter{Iterator: it} })
}

// Merge merges replicas with NewCounterIterator when they are counters, NewIterator
// otherwise.
func Merge(counter bool, replicas ...chunkenc.Iterator) chunkenc.Iterator {
	if counter {
		return NewCounterIterator(replicas...)
	}
	return NewIterator(replicas...)
}

func fold(replicas []chunkenc.Iterator, wrap func(chunkenc.Iterator) adjustable) chunkenc.Iterator {
	switch len(replicas) {
	case 0:
		return chunkenc.NewNopIterator()
	case 1:
		return replicas[0]
	}
	it := wrap(replicas[0])
	for _, r := range replicas[1:] {
		it = &pair{a: it, b: wrap(r), lastT: math.MinInt64}
	}
	return it
}

// SplitOverlapping splits chunks sorted by MinTime into runs whose chunks do not overlap in
// time, each to be merged as one replica. A series merged from several stores (or from
// blocks of several replicas, stripped of replica labels by the store) has overlapping
// chunks that are in fact replicas of each other.
func SplitOverlapping(chks []chunks.Meta) [][]chunks.Meta {
	var runs [][]chunks.Meta
next:
	for _, c := range chks {
		for i, run := range runs {
			if c.MinTime > run[len(run)-1].MaxTime {
				runs[i] = append(run, c)
				continue next
			}
		}
		runs = append(runs, []chunks.Meta{c})
	}
	return runs
}

// millis is int64 under a name of its own only so that go vet's stdmethods check does not
// mistake chunkenc.Iterator's Seek for a malformed io.Seeker.
type millis = int64

// adjustable is a replica iterator told when the merged stream switches to it.
type adjustable interface {
	chunkenc.Iterator
	// adjust is called after a switch to this iterator, positioned on a float sample;
	// last is the float value emitted just before the switch.
	adjust(last float64)
}

type plain struct{ chunkenc.Iterator }

func (plain) adjust(float64) {}

// counter adds offset to every float value of its replica.
type counter struct {
	chunkenc.Iterator
	offset float64
}

func (c *counter) At() (int64, float64) {
	t, v := c.Iterator.At()
	return t, v + c.offset
}

func (c *counter) adjust(last float64) {
	if _, v := c.At(); v < last {
		c.offset += last - v
	}
}

// pair merges two replicas. Each step seeks a to lastT+1+penA and b to lastT+1+penB and
// emits the earlier sample (a on ties); the side not picked is penalised with twice the
// distance from the previous sample, so it is only picked again after a gap in the other.
type pair struct {
	a, b       adjustable
	aval, bval chunkenc.ValueType

	started, done bool
	cur           adjustable // side of the current sample
	curVal        chunkenc.ValueType
	lastT         int64
	lastF         float64 // value of the current sample when it is a float
	penA, penB    int64
}

func (p *pair) Next() chunkenc.ValueType {
	if p.done {
		return chunkenc.ValNone
	}
	if !p.started {
		p.started = true
		p.aval, p.bval = p.a.Next(), p.b.Next()
	} else {
		if p.aval != chunkenc.ValNone {
			p.aval = p.a.Seek(p.lastT + 1 + p.penA)
		}
		if p.bval != chunkenc.ValNone {
			p.bval = p.b.Seek(p.lastT + 1 + p.penB)
		}
	}

	var pick adjustable
	var val chunkenc.ValueType
	switch {
	case p.aval == chunkenc.ValNone && p.bval == chunkenc.ValNone:
		p.done, p.curVal = true, chunkenc.ValNone
		return chunkenc.ValNone
	case p.bval == chunkenc.ValNone:
		pick, val, p.penA = p.a, p.aval, 0
	case p.aval == chunkenc.ValNone:
		pick, val, p.penB = p.b, p.bval, 0
	default:
		ta, tb := p.a.AtT(), p.b.AtT()
		if ta <= tb {
			pick, val, p.penA, p.penB = p.a, p.aval, 0, p.penalty(ta)
		} else {
			pick, val, p.penA, p.penB = p.b, p.bval, p.penalty(tb), 0
		}
	}

	if p.cur != nil && pick != p.cur && p.curVal == chunkenc.ValFloat && val == chunkenc.ValFloat {
		pick.adjust(p.lastF)
	}
	p.cur, p.curVal, p.lastT = pick, val, pick.AtT()
	if val == chunkenc.ValFloat {
		_, p.lastF = pick.At()
	}
	return val
}

func (p *pair) penalty(t int64) int64 {
	if p.lastT == math.MinInt64 {
		return initialPenalty
	}
	return 2 * (t - p.lastT)
}

// Seek steps with Next rather than seeking the replicas, so that a gap in one replica
// before t is still filled from the other.
func (p *pair) Seek(t millis) chunkenc.ValueType {
	if p.started && !p.done && p.lastT >= t {
		return p.curVal
	}
	for {
		v := p.Next()
		if v == chunkenc.ValNone || p.lastT >= t {
			return v
		}
	}
}

// adjust forwards to the side of the current sample, whose values the pair emits.
func (p *pair) adjust(last float64) {
	if p.cur != nil {
		p.cur.adjust(last)
		if p.curVal == chunkenc.ValFloat {
			_, p.lastF = p.cur.At()
		}
	}
}

func (p *pair) At() (int64, float64) { return p.cur.At() }

func (p *pair) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return p.cur.AtHistogram(h)
}

func (p *pair) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return p.cur.AtFloatHistogram(fh)
}

func (p *pair) AtT() int64 { return p.cur.AtT() }

func (p *pair) AtST() int64 { return p.cur.AtST() }

func (p *pair) Err() error {
	if err := p.a.Err(); err != nil {
		return err
	}
	return p.b.Err()
}
