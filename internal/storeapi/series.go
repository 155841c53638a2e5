package storeapi

import (
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/dedup"
)

// remoteSeries is a series merged from the endpoints' responses: its chunks, sorted by
// time, may overlap when several replicas or stores returned the same series.
type remoteSeries struct {
	lset       labels.Labels
	chunks     []chunks.Meta
	mint, maxt int64
	dedup      bool // overlapping runs are replicas: merge them with the penalty algorithm
	counter    bool // ... adjusting for counter resets at replica switches
	// aggrs are what downsampled chunks yield (aggrchunk.AggrsForFunc of the function).
	aggrs []aggrchunk.Aggr
}

func (s *remoteSeries) Labels() labels.Labels { return s.lset }

func (s *remoteSeries) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	runs := dedup.SplitOverlapping(s.chunks)
	its := make([]chunkenc.Iterator, 0, len(runs))
	for _, run := range runs {
		its = append(its, s.runIterator(run))
	}
	if len(its) > 1 && !s.dedup {
		// Overlapping data of one series from several stores: merge, keeping one sample
		// per timestamp.
		return storage.ChainSampleIteratorFromIterators(nil, its)
	}
	return dedup.Merge(s.counter, its...)
}

// runIterator reads chunks that do not overlap. With downsampled chunks among them, they
// yield the aggregates asked for, a counter being read across all of them (raw chunks
// included) so that its resets are applied, as the Thanos Querier reads them.
func (s *remoteSeries) runIterator(run []chunks.Meta) chunkenc.Iterator {
	chks := make([]chunkenc.Chunk, len(run))
	downsampled := false
	for i, m := range run {
		chks[i] = m.Chunk
		downsampled = downsampled || m.Chunk.Encoding() == aggrchunk.Encoding
	}
	if !downsampled {
		return &chunksIterator{chunks: run, mint: s.mint, maxt: s.maxt}
	}
	return &boundedIterator{Iterator: aggrchunk.SeriesIterator(chks, s.aggrs), mint: s.mint, maxt: s.maxt}
}

// boundedIterator yields the samples of an iterator within [mint, maxt].
type boundedIterator struct {
	chunkenc.Iterator
	mint, maxt    int64
	started, done bool
}

func (it *boundedIterator) Next() chunkenc.ValueType {
	switch {
	case it.done:
		return chunkenc.ValNone
	case !it.started:
		return it.Seek(it.mint)
	}
	return it.bound(it.Iterator.Next())
}

func (it *boundedIterator) Seek(t millis) chunkenc.ValueType {
	if it.done {
		return chunkenc.ValNone
	}
	it.started = true
	return it.bound(it.Iterator.Seek(max(t, it.mint)))
}

func (it *boundedIterator) bound(vt chunkenc.ValueType) chunkenc.ValueType {
	if vt != chunkenc.ValNone && it.Iterator.AtT() > it.maxt {
		it.done = true
		return chunkenc.ValNone
	}
	return vt
}

// chunksIterator iterates over the samples of non-overlapping chunks sorted by time,
// within [mint, maxt]: stores return whole chunks, which may reach outside the range asked.
type chunksIterator struct {
	chunks     []chunks.Meta
	mint, maxt int64

	next int                // index of the next chunk to open
	cur  chunkenc.Iterator  // iterator of the open chunk, nil between chunks
	val  chunkenc.ValueType // type of the current sample
	done bool
	err  error
}

func (it *chunksIterator) Next() chunkenc.ValueType {
	if it.done {
		return chunkenc.ValNone
	}
	for {
		if it.cur == nil && !it.open(it.mint) {
			return it.stop(nil)
		}
		v := it.cur.Next()
		if v == chunkenc.ValNone {
			if err := it.cur.Err(); err != nil {
				return it.stop(err)
			}
			it.cur, it.val = nil, chunkenc.ValNone
			continue
		}
		if t := it.cur.AtT(); t < it.mint {
			continue
		} else if t > it.maxt {
			return it.stop(nil)
		}
		it.val = v
		return v
	}
}

func (it *chunksIterator) Seek(t millis) chunkenc.ValueType {
	if it.done {
		return chunkenc.ValNone
	}
	if it.val != chunkenc.ValNone && it.cur.AtT() >= t {
		return it.val
	}
	t = max(t, it.mint)
	for {
		if it.cur == nil && !it.open(t) {
			return it.stop(nil)
		}
		v := it.cur.Seek(t)
		if v == chunkenc.ValNone {
			if err := it.cur.Err(); err != nil {
				return it.stop(err)
			}
			it.cur, it.val = nil, chunkenc.ValNone
			continue
		}
		if it.cur.AtT() > it.maxt {
			return it.stop(nil)
		}
		it.val = v
		return v
	}
}

// open opens the next chunk that has samples at or after t, if any.
func (it *chunksIterator) open(t int64) bool {
	for it.next < len(it.chunks) && it.chunks[it.next].MaxTime < t {
		it.next++
	}
	if it.next == len(it.chunks) {
		return false
	}
	it.cur = it.chunks[it.next].Chunk.Iterator(nil)
	it.next++
	return true
}

func (it *chunksIterator) stop(err error) chunkenc.ValueType {
	it.done, it.err, it.val, it.cur = true, err, chunkenc.ValNone, nil
	return chunkenc.ValNone
}

func (it *chunksIterator) At() (int64, float64) { return it.cur.At() }

func (it *chunksIterator) AtHistogram(h *histogram.Histogram) (int64, *histogram.Histogram) {
	return it.cur.AtHistogram(h)
}

func (it *chunksIterator) AtFloatHistogram(fh *histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.cur.AtFloatHistogram(fh)
}

func (it *chunksIterator) AtT() int64  { return it.cur.AtT() }
func (it *chunksIterator) AtST() int64 { return it.cur.AtST() }
func (it *chunksIterator) Err() error  { return it.err }

// millis is int64 under a name of its own only so that go vet's stdmethods check does not
// mistake chunkenc.Iterator's Seek for a malformed io.Seeker.
type millis = int64
