package downsample

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/aggrchunk"
)

// Native histograms downsample as Thanos does it: per window the count of histograms (an
// XOR chunk), their sum and a counter with resets corrected (float-histogram chunks); no
// min and max. Every histogram of a batch is brought down to the batch's smallest schema
// first. Gauge histograms keep a gauge reset hint so that a smaller value does not read as
// a reset. Unlike floats, the counter chunk has no extra first and last raw samples: the
// histograms' own reset detection works across chunks.

// histogramError is a native-histogram series that cannot be aggregated (e.g. custom
// bucket bounds mixed with exponential ones). It costs that series' histograms, not the
// block.
type histogramError struct{ err error }

func (e histogramError) Error() string { return "native histograms: " + e.err.Error() }
func (e histogramError) Unwrap() error { return e.err }

// histogramAggregator accumulates one window's number of histograms and their sum, and a
// counter with resets corrected that runs across windows, all at one schema.
type histogramAggregator struct {
	schema  int32
	total   int
	count   int
	sum     *histogram.FloatHistogram
	counter *histogram.FloatHistogram
	prev    *histogram.FloatHistogram
	err     error
}

func (h *histogramAggregator) resetWindow() {
	h.count, h.sum = 0, nil
}

func (h *histogramAggregator) add(s sample) {
	if h.err != nil {
		return
	}
	fh := s.fh
	if fh.Schema != h.schema {
		if fh.UsesCustomBuckets() || histogram.IsCustomBucketsSchema(h.schema) {
			h.err = fmt.Errorf("schema %d mixed with %d at %d", fh.Schema, h.schema, s.t)
			return
		}
		var err error
		if fh, err = s.fh.CopyToSchema(h.schema); err != nil {
			h.err = fmt.Errorf("reduce schema at %d: %w", s.t, err)
			return
		}
	}
	switch {
	case h.total == 0:
		h.counter = fh.Copy()
	// The original histogram decides: a higher schema than the previous one is a reset.
	case fh.CounterResetHint != histogram.GaugeType && s.fh.DetectReset(h.prev):
		h.err = histogramOp(h.counter.Add(fh))
	default:
		delta := fh.Copy()
		if h.err = histogramOp(delta.Sub(h.prev)); h.err == nil {
			h.err = histogramOp(h.counter.Add(delta))
		}
	}
	if h.sum == nil {
		h.sum = fh.Copy()
	} else if err := histogramOp(h.sum.Add(fh)); err != nil && h.err == nil {
		h.err = err
	}
	// Window sums are not cumulative: as gauges, a smaller one is no reset.
	h.sum.CounterResetHint = histogram.GaugeType
	h.prev = fh
	h.count++
	h.total++
}

func histogramOp(_ *histogram.FloatHistogram, _, _ bool, err error) error { return err }

// minSchema is the smallest schema among the histograms of batch.
func minSchema(batch []sample) int32 {
	schema := int32(math.MaxInt32)
	for _, s := range batch {
		schema = min(schema, s.fh.Schema)
	}
	return schema
}

// isGauge reports whether batch holds gauge histograms, going by its first sample's hint.
func isGauge(batch []sample) bool {
	return len(batch) > 0 && batch[0].fh.CounterResetHint == histogram.GaugeType
}

// histogramBuilder appends to the count, sum and counter chunks of a histogram chunk.
type histogramBuilder struct {
	*chunkBuilder
	gauge bool
}

func newHistogramBuilder(gauge bool) histogramBuilder {
	b := histogramBuilder{chunkBuilder: newChunkBuilder(), gauge: gauge}
	b.start(aggrchunk.Count)
	for _, a := range []aggrchunk.Aggr{aggrchunk.Sum, aggrchunk.Counter} {
		c := chunkenc.NewFloatHistogramChunk()
		// A new chunk always has an appender.
		app, _ := c.Appender()
		b.chunks[a], b.apps[a] = c, app
	}
	return b
}

// appendHistogram appends fh to aggregate a's chunk. The chunk may be re-encoded to fit new
// buckets; a value it cannot take without starting another chunk (a counter going down, a
// zero threshold changing) cannot be represented and is an error.
func (b histogramBuilder) appendHistogram(a aggrchunk.Aggr, t int64, fh *histogram.FloatHistogram) error {
	// The appender may rewrite the histogram's spans; the aggregator keeps using it.
	fh = fh.Copy()
	switch {
	case a == aggrchunk.Sum || b.gauge:
		fh.CounterResetHint = histogram.GaugeType
	default:
		// The counter only grows: let the chunk see that rather than a reset hint
		// copied from a raw sample.
		fh.CounterResetHint = histogram.UnknownCounterReset
	}
	c, recoded, app, err := b.apps[a].AppendFloatHistogram(nil, 0, t, fh, false)
	if err != nil {
		return err
	}
	if c != nil && !recoded {
		return fmt.Errorf("%s aggregate at %d does not fit its chunk", a, t)
	}
	if c != nil {
		b.chunks[a] = c
	}
	b.apps[a] = app
	return nil
}

// downsampleHistogramBatch aggregates one batch of raw native histograms into one chunk.
func downsampleHistogramBatch(batch []sample, resolution int64) (chunks.Meta, error) {
	b := newHistogramBuilder(isGauge(batch))
	agg := &histogramAggregator{schema: minSchema(batch)}
	var err error
	aggregateWindows(batch, resolution, agg, func(t int64) {
		if err != nil || agg.err != nil {
			return
		}
		b.window(t)
		b.append(aggrchunk.Count, t, float64(agg.count))
		if err = b.appendHistogram(aggrchunk.Sum, t, agg.sum); err == nil {
			err = b.appendHistogram(aggrchunk.Counter, t, agg.counter)
		}
	})
	if err = errors.Join(agg.err, err); err != nil {
		return chunks.Meta{}, histogramError{err}
	}
	return b.meta()
}

// downsampleHistogramAggrBatch re-aggregates a batch of native-histogram chunks: counts
// add up, sums add up, and the counters are read as one counter and aggregated again.
func downsampleHistogramAggrBatch(chks []*aggrchunk.Chunk, resolution int64, buf []sample) (chunks.Meta, []sample, error) {
	var b histogramBuilder
	for i, a := range []aggrchunk.Aggr{aggrchunk.Counter, aggrchunk.Sum} {
		buf = buf[:0]
		for _, c := range chks {
			sub, err := c.Get(a)
			if errors.Is(err, aggrchunk.ErrAbsent) {
				continue
			}
			if err != nil {
				return chunks.Meta{}, buf, err
			}
			if buf, err = expandHistograms(buf, sub.Iterator(nil)); err != nil {
				return chunks.Meta{}, buf, fmt.Errorf("%s aggregate: %w", a, err)
			}
		}
		if i == 0 {
			b = newHistogramBuilder(isGauge(buf))
		}
		if len(buf) == 0 {
			continue
		}
		agg := &histogramAggregator{schema: minSchema(buf)}
		var appendErr error
		aggregateWindows(buf, resolution, agg, func(t int64) {
			if appendErr != nil || agg.err != nil {
				return
			}
			b.window(t)
			v := agg.counter
			if a == aggrchunk.Sum {
				v = agg.sum
			}
			appendErr = b.appendHistogram(a, t, v)
		})
		if err := errors.Join(agg.err, appendErr); err != nil {
			return chunks.Meta{}, buf, histogramError{err}
		}
	}

	buf = buf[:0]
	for _, c := range chks {
		sub, err := c.Get(aggrchunk.Count)
		if err != nil {
			return chunks.Meta{}, buf, err
		}
		if buf, err = expand(buf, sub.Iterator(nil)); err != nil {
			return chunks.Meta{}, buf, fmt.Errorf("count aggregate: %w", err)
		}
	}
	if len(buf) > 0 {
		var agg aggregator
		aggregateWindows(buf, resolution, &agg, func(t int64) {
			b.window(t)
			b.append(aggrchunk.Count, t, agg.sum)
		})
	}
	m, err := b.meta()
	return m, buf, err
}

// expandHistograms appends the native histograms of it to buf as float histograms,
// leaving out stale markers and samples that go back in time.
func expandHistograms(buf []sample, it chunkenc.Iterator) ([]sample, error) {
	lastT := int64(math.MinInt64)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		var (
			t  int64
			fh *histogram.FloatHistogram
		)
		switch vt {
		case chunkenc.ValHistogram:
			var h *histogram.Histogram
			t, h = it.AtHistogram(nil)
			fh = h.ToFloat(nil)
		case chunkenc.ValFloatHistogram:
			t, fh = it.AtFloatHistogram(nil)
		default:
			return buf, fmt.Errorf("unexpected %s sample in a histogram chunk", vt)
		}
		if value.IsStaleNaN(fh.Sum) || t < lastT {
			continue
		}
		buf = append(buf, sample{t: t, fh: fh})
		lastT = t
	}
	return buf, it.Err()
}
