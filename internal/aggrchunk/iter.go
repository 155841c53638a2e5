package aggrchunk

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// AggrsForFunc returns the aggregates Thanos' querier asks for when the PromQL function fn
// wraps a selector over downsampled data (SelectHints.Func): a single aggregate, or
// [Count, Sum] for the window averages.
func AggrsForFunc(fn string) []Aggr {
	switch {
	case fn == "min" || strings.HasPrefix(fn, "min_"):
		return []Aggr{Min}
	case fn == "max" || strings.HasPrefix(fn, "max_"):
		return []Aggr{Max}
	case fn == "count" || strings.HasPrefix(fn, "count_"):
		return []Aggr{Count}
	case strings.HasPrefix(fn, "sum_"):
		// Plain sum() adds up series, not samples: it gets the averages below.
		return []Aggr{Sum}
	case fn == "rate" || fn == "increase" || fn == "irate" || fn == "resets" || fn == "xrate" || fn == "xincrease":
		return []Aggr{Counter}
	}
	return []Aggr{Count, Sum}
}

// SeriesIterator returns the samples of one series' chunks, in time order, as Thanos'
// querier derives them. aggrs is what AggrsForFunc returned: with a single aggregate the
// samples are that aggregate's values, and the counter aggregate is read through a
// CounterIterator so that rate() sees one monotonic counter; otherwise they are the window
// averages sum/count. Chunks that are not downsampled (raw chunks of a series that also has
// downsampled ones) contribute their own samples.
func SeriesIterator(chks []chunkenc.Chunk, aggrs []Aggr) chunkenc.Iterator {
	single := len(aggrs) == 1
	its := make([]chunkenc.Iterator, 0, len(chks))
	for _, c := range chks {
		ac, ok := c.(*Chunk)
		if !ok {
			its = append(its, c.Iterator(nil))
			continue
		}
		if single {
			sub, err := ac.Get(aggrs[0])
			if err != nil {
				return ErrIterator(err)
			}
			its = append(its, sub.Iterator(nil))
			continue
		}
		cnt, err := ac.Get(Count)
		if err != nil {
			return ErrIterator(err)
		}
		sum, err := ac.Get(Sum)
		if err != nil {
			return ErrIterator(err)
		}
		its = append(its, &averageIterator{count: cnt.Iterator(nil), sum: sum.Iterator(nil)})
	}
	if single && aggrs[0] == Counter {
		return NewCounterIterator(its...)
	}
	return &concatIterator{its: its}
}

// millis is int64 under a name of its own only so that go vet's stdmethods check does not
// take the iterators' Seek for io.Seeker's.
type millis = int64

// ErrIterator returns an iterator without samples whose Err is err, for a series whose
// chunks could not be read.
func ErrIterator(err error) chunkenc.Iterator { return &concatIterator{err: err} }

// CounterIterator reads a sequence of counter chunks (counter aggregates or raw counter
// chunks) in time order as one counter that never decreases: every drop is a reset, after
// which the new value counts in full. A counter aggregate begins with the first raw sample
// of its batch and ends with a repeat of its last timestamp carrying the batch's last raw
// value; comparing that value with the next chunk's first raw sample finds resets between
// chunks. The resets are hidden from PromQL, so resets() cannot see them (as in Thanos).
// Native-histogram samples pass through unchanged: they carry their own reset hints.
type CounterIterator struct {
	its   []chunkenc.Iterator
	i     int
	typ   chunkenc.ValueType // of the current sample; ValNone before the first
	t     int64
	raw   float64 // the last raw value seen
	total float64
	err   error
}

// NewCounterIterator returns a CounterIterator over its, which must be in time order.
func NewCounterIterator(its ...chunkenc.Iterator) *CounterIterator {
	return &CounterIterator{its: its}
}

// Next implements chunkenc.Iterator.
func (it *CounterIterator) Next() chunkenc.ValueType {
	for it.i < len(it.its) {
		cur := it.its[it.i]
		vt := cur.Next()
		switch vt {
		case chunkenc.ValNone:
			if err := cur.Err(); err != nil {
				it.err = err
				return it.stop()
			}
			it.i++
			continue
		case chunkenc.ValFloat:
		default:
			if t := cur.AtT(); it.typ == chunkenc.ValNone || t > it.t {
				it.typ, it.t = vt, t
				return vt
			}
			continue
		}
		t, v := cur.At()
		switch {
		case math.IsNaN(v):
		case it.typ == chunkenc.ValNone:
			it.typ, it.t, it.raw, it.total = chunkenc.ValFloat, t, v, v
			return chunkenc.ValFloat
		case t > it.t:
			if v >= it.raw {
				it.total += v - it.raw
			} else {
				it.total += v
			}
			it.typ, it.t, it.raw = chunkenc.ValFloat, t, v
			return chunkenc.ValFloat
		case t == it.t:
			// The repeated timestamp that ends a counter aggregate: the true last raw value.
			it.raw = v
		}
		// Otherwise the chunk overlaps the previous one: skip what goes back in time.
	}
	return it.stop()
}

func (it *CounterIterator) stop() chunkenc.ValueType {
	it.i = len(it.its)
	return chunkenc.ValNone
}

// Seek implements chunkenc.Iterator. It steps through every sample so as not to miss a reset.
func (it *CounterIterator) Seek(t millis) chunkenc.ValueType {
	if it.typ != chunkenc.ValNone && it.t >= t && it.i < len(it.its) {
		return it.typ
	}
	for {
		vt := it.Next()
		if vt == chunkenc.ValNone || it.t >= t {
			return vt
		}
	}
}

// At implements chunkenc.Iterator: the reset-corrected counter.
func (it *CounterIterator) At() (int64, float64) { return it.t, it.total }

// AtHistogram implements chunkenc.Iterator.
func (it *CounterIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.its[it.i].AtHistogram(h)
}

// AtFloatHistogram implements chunkenc.Iterator.
func (it *CounterIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.its[it.i].AtFloatHistogram(fh)
}

// AtT implements chunkenc.Iterator.
func (it *CounterIterator) AtT() int64 { return it.t }

// AtST implements chunkenc.Iterator; downsampled data has no start timestamps.
func (it *CounterIterator) AtST() int64 { return 0 }

// Err implements chunkenc.Iterator.
func (it *CounterIterator) Err() error { return it.err }

// LastRaw is the last raw counter value seen, after the current sample: what a chunk that
// re-aggregates these samples must end with.
func (it *CounterIterator) LastRaw() float64 { return it.raw }

// averageIterator yields sum/count of each window of one downsampled chunk.
type averageIterator struct {
	count, sum chunkenc.Iterator
	typ        chunkenc.ValueType
	t          int64
	v          float64
	fh         *histogram.FloatHistogram
	err        error
}

func (it *averageIterator) Next() chunkenc.ValueType {
	if it.err != nil {
		return chunkenc.ValNone
	}
	ct, st := it.count.Next(), it.sum.Next()
	if ct == chunkenc.ValNone || st == chunkenc.ValNone {
		switch {
		case it.count.Err() != nil:
			it.err = it.count.Err()
		case it.sum.Err() != nil:
			it.err = it.sum.Err()
		case ct != st:
			it.err = errors.New("downsampled chunk: count and sum aggregates differ in length")
		}
		it.typ = chunkenc.ValNone
		return it.typ
	}
	t, n := it.count.At()
	if t != it.sum.AtT() {
		it.err = fmt.Errorf("downsampled chunk: count at %d, sum at %d", t, it.sum.AtT())
		it.typ = chunkenc.ValNone
		return it.typ
	}
	it.t, it.typ = t, st
	switch st {
	case chunkenc.ValFloat:
		_, s := it.sum.At()
		it.v = s / n
	case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
		_, it.fh = it.sum.AtFloatHistogram(nil)
		it.fh.Div(n)
		it.typ = chunkenc.ValFloatHistogram
	}
	return it.typ
}

func (it *averageIterator) Seek(t millis) chunkenc.ValueType {
	if it.typ != chunkenc.ValNone && it.t >= t {
		return it.typ
	}
	for {
		vt := it.Next()
		if vt == chunkenc.ValNone || it.t >= t {
			return vt
		}
	}
}

func (it *averageIterator) At() (int64, float64) { return it.t, it.v }

func (it *averageIterator) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	// Averages are never integer histograms; PromQL asks for float histograms.
	return it.t, nil
}

func (it *averageIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	if fh == nil {
		return it.t, it.fh.Copy()
	}
	it.fh.CopyTo(fh)
	return it.t, fh
}

func (it *averageIterator) AtT() int64  { return it.t }
func (it *averageIterator) AtST() int64 { return 0 }
func (it *averageIterator) Err() error  { return it.err }

// concatIterator reads per-chunk iterators one after the other, skipping any sample that
// does not come after the previous one.
type concatIterator struct {
	its []chunkenc.Iterator
	i   int
	typ chunkenc.ValueType
	t   int64
	err error
}

func (it *concatIterator) Next() chunkenc.ValueType {
	for it.err == nil && it.i < len(it.its) {
		cur := it.its[it.i]
		vt := cur.Next()
		if vt == chunkenc.ValNone {
			it.err = cur.Err()
			it.i++
			continue
		}
		if t := cur.AtT(); it.typ == chunkenc.ValNone || t > it.t {
			it.typ, it.t = vt, t
			return vt
		}
	}
	it.i = len(it.its)
	return chunkenc.ValNone
}

func (it *concatIterator) Seek(t millis) chunkenc.ValueType {
	if it.typ != chunkenc.ValNone && it.t >= t && it.i < len(it.its) {
		return it.typ
	}
	for {
		vt := it.Next()
		if vt == chunkenc.ValNone || it.t >= t {
			return vt
		}
	}
}

func (it *concatIterator) At() (int64, float64) { return it.its[it.i].At() }

func (it *concatIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.its[it.i].AtHistogram(h)
}

func (it *concatIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.its[it.i].AtFloatHistogram(fh)
}

func (it *concatIterator) AtT() int64  { return it.t }
func (it *concatIterator) AtST() int64 { return 0 }
func (it *concatIterator) Err() error  { return it.err }
