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

// rawResolution is the input resolution assumed for raw data when sizing output chunks.
// Scrapes are usually more frequent; Thanos assumes one minute and so do we, so that chunk
// boundaries, and with them the counter's first and last raw samples, are the same.
const rawResolution = 60 * 1000

// maxWindowsPerChunk bounds the average number of windows in one output chunk.
const maxWindowsPerChunk = 140

// sample is a float, or a native histogram when fh is set.
type sample struct {
	t  int64
	v  float64
	fh *histogram.FloatHistogram
}

// windowEnd is the last millisecond of the resolution-wide window t falls into; windows are
// aligned to multiples of the resolution.
func windowEnd(t, resolution int64) int64 {
	return t - t%resolution + resolution - 1
}

// targetChunkCount is how many chunks a series of count samples over [mint, maxt] at
// inRes becomes at outRes: the windows it would fill, scaled by how densely the input
// covers its range, at most maxWindowsPerChunk windows per chunk on average.
func targetChunkCount(mint, maxt, inRes, outRes int64, count int) int {
	fullness := float64(count) / (float64(maxt-mint) / float64(inRes))
	if fullness > 1 {
		fullness = 1
	}
	windows := int(float64((maxt-mint)/outRes)*fullness) + 1
	n := 1
	for windows/n > maxWindowsPerChunk {
		n++
	}
	return n
}

// aggregator accumulates one window's count, sum, min and max, and a counter with resets
// corrected that runs across windows.
type aggregator struct {
	total    int // samples since the start of the batch
	count    int
	sum      float64
	min, max float64
	counter  float64
	last     float64
}

func (a *aggregator) resetWindow() {
	a.count, a.sum = 0, 0
	a.min, a.max = math.MaxFloat64, -math.MaxFloat64
}

func (a *aggregator) add(s sample) {
	v := s.v
	switch {
	case a.total == 0:
		a.counter = v
	case v < a.last:
		// A reset: the counter restarted from zero and has counted v since.
		a.counter += v
	default:
		a.counter += v - a.last
	}
	a.last = v
	a.total++
	a.count++
	a.sum += v
	// NaN never gets here, so plain comparisons do (and are cheaper than math.Min).
	if v < a.min {
		a.min = v
	}
	if v > a.max {
		a.max = v
	}
}

// windowAggregator accumulates the samples of one window at a time.
type windowAggregator interface {
	resetWindow()
	add(s sample)
}

// aggregateWindows feeds data, in time order, through a into resolution-wide windows and
// calls emit at the end of each window with the window's timestamp: its last millisecond,
// or the batch's last timestamp for the final window, so that no output sample lies beyond
// the batch (aggregate batches follow chunk boundaries, which windows do not). It returns
// the final window's timestamp.
func aggregateWindows(data []sample, resolution int64, a windowAggregator, emit func(t int64)) int64 {
	last := data[len(data)-1].t
	var end int64
	for i, s := range data {
		if i == 0 || s.t > end {
			if i > 0 {
				emit(end)
			}
			a.resetWindow()
			end = min(windowEnd(s.t, resolution), last)
		}
		a.add(s)
	}
	emit(end)
	return end
}

// chunkBuilder appends to one XOR chunk per aggregate.
type chunkBuilder struct {
	mint, maxt int64
	chunks     [aggrchunk.NumAggrs]chunkenc.Chunk
	apps       [aggrchunk.NumAggrs]chunkenc.Appender
}

func newChunkBuilder() *chunkBuilder {
	return &chunkBuilder{mint: math.MaxInt64, maxt: math.MinInt64}
}

// start begins aggregate a's chunk.
func (b *chunkBuilder) start(a aggrchunk.Aggr) {
	c := chunkenc.NewXORChunk()
	// A new XOR chunk always has an appender.
	app, _ := c.Appender()
	b.chunks[a], b.apps[a] = c, app
}

func (b *chunkBuilder) append(a aggrchunk.Aggr, t int64, v float64) {
	b.apps[a].Append(0, t, v)
}

// window records a window's timestamp in the chunk's time range.
func (b *chunkBuilder) window(t int64) {
	b.mint = min(b.mint, t)
	b.maxt = max(b.maxt, t)
}

func (b *chunkBuilder) meta() (chunks.Meta, error) {
	if b.mint > b.maxt {
		return chunks.Meta{}, errors.New("downsampled chunk has no windows")
	}
	return chunks.Meta{MinTime: b.mint, MaxTime: b.maxt, Chunk: aggrchunk.Encode(b.chunks)}, nil
}

// downsampleRaw appends to out the downsampled chunks of one series' raw samples, which
// are in time order, free of stale markers and all floats or all histograms. data is
// reused as scratch space.
func downsampleRaw(out []chunks.Meta, data []sample, resolution int64) ([]chunks.Meta, error) {
	if len(data) == 0 {
		return out, nil
	}
	numChunks := targetChunkCount(data[0].t, data[len(data)-1].t, rawResolution, resolution, len(data))
	batchSize := len(data)/numChunks + 1
	for len(data) > 0 {
		j := min(batchSize, len(data))
		// Finish the window the batch's last sample falls into, so that each window lives
		// in one chunk.
		for end := windowEnd(data[j-1].t, resolution); j < len(data) && data[j].t <= end; j++ {
		}
		batch := dropNaN(data[:j])
		data = data[j:]
		if len(batch) == 0 {
			continue
		}
		batchFn := downsampleBatch
		if batch[0].fh != nil {
			batchFn = downsampleHistogramBatch
		}
		m, err := batchFn(batch, resolution)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	return out, nil
}

// dropNaN removes NaN values (and histograms with a NaN sum) in place.
func dropNaN(batch []sample) []sample {
	kept := batch[:0]
	for _, s := range batch {
		if !math.IsNaN(s.v) && (s.fh == nil || !math.IsNaN(s.fh.Sum)) {
			kept = append(kept, s)
		}
	}
	return kept
}

// downsampleBatch aggregates one batch of raw samples into one chunk. Its counter begins
// with the batch's first raw sample and ends by repeating the last window's timestamp with
// the batch's last raw value, so a reader can tell a reset between two chunks from growth.
func downsampleBatch(batch []sample, resolution int64) (chunks.Meta, error) {
	b := newChunkBuilder()
	for a := range aggrchunk.Aggr(aggrchunk.NumAggrs) {
		b.start(a)
	}
	b.append(aggrchunk.Counter, batch[0].t, batch[0].v)
	var agg aggregator
	last := aggregateWindows(batch, resolution, &agg, func(t int64) {
		b.window(t)
		b.append(aggrchunk.Count, t, float64(agg.count))
		b.append(aggrchunk.Sum, t, agg.sum)
		b.append(aggrchunk.Min, t, agg.min)
		b.append(aggrchunk.Max, t, agg.max)
		b.append(aggrchunk.Counter, t, agg.counter)
	})
	b.append(aggrchunk.Counter, last, batch[len(batch)-1].v)
	return b.meta()
}

// downsampleAggr appends to out the chunks of one series' downsampled chunks (from inRes to
// resolution), re-aggregated along their chunk boundaries: a counter's first and last raw
// values live at those boundaries and must survive every level. The chunks are all float
// or all histogram chunks. buf is scratch space.
func downsampleAggr(out []chunks.Meta, chks []*aggrchunk.Chunk, mint, maxt, inRes, resolution int64, buf []sample) ([]chunks.Meta, []sample, error) {
	if len(chks) == 0 {
		return out, buf, nil
	}
	windows := 0
	for _, c := range chks {
		windows += c.NumSamples()
	}
	numChunks := targetChunkCount(mint, maxt, inRes, resolution, windows)
	// Thanos divides without rounding up and fails when that gives 0; take one chunk instead.
	batchSize := max(1, len(chks)/numChunks)
	batchFn := downsampleAggrBatch
	if chks[0].IsHistogram() {
		batchFn = downsampleHistogramAggrBatch
	}
	for len(chks) > 0 {
		j := min(batchSize, len(chks))
		var (
			m   chunks.Meta
			err error
		)
		m, buf, err = batchFn(chks[:j], resolution, buf)
		if err != nil {
			return out, buf, err
		}
		out = append(out, m)
		chks = chks[j:]
	}
	return out, buf, nil
}

// downsampleAggrBatch re-aggregates a batch of downsampled chunks into one: counts and sums
// add up, min and max of each window are the min of mins and the max of maxes, and the
// counter is read as one reset-corrected counter, then aggregated again with the batch's
// first and last raw values kept.
func downsampleAggrBatch(chks []*aggrchunk.Chunk, resolution int64, buf []sample) (chunks.Meta, []sample, error) {
	b := newChunkBuilder()
	var agg aggregator
	for _, a := range []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum, aggrchunk.Min, aggrchunk.Max} {
		buf = buf[:0]
		for _, c := range chks {
			sub, err := c.Get(a)
			if errors.Is(err, aggrchunk.ErrAbsent) {
				continue
			}
			if err != nil {
				return chunks.Meta{}, buf, err
			}
			if buf, err = expand(buf, sub.Iterator(nil)); err != nil {
				return chunks.Meta{}, buf, fmt.Errorf("%s aggregate: %w", a, err)
			}
		}
		if len(buf) == 0 {
			continue
		}
		b.start(a)
		aggregateWindows(buf, resolution, &agg, func(t int64) {
			b.window(t)
			switch a {
			case aggrchunk.Count, aggrchunk.Sum:
				b.append(a, t, agg.sum)
			case aggrchunk.Min:
				b.append(a, t, agg.min)
			case aggrchunk.Max:
				b.append(a, t, agg.max)
			}
		})
	}

	its := make([]chunkenc.Iterator, 0, len(chks))
	for _, c := range chks {
		sub, err := c.Get(aggrchunk.Counter)
		if errors.Is(err, aggrchunk.ErrAbsent) {
			continue
		}
		if err != nil {
			return chunks.Meta{}, buf, err
		}
		its = append(its, sub.Iterator(nil))
	}
	counter := aggrchunk.NewCounterIterator(its...)
	buf = buf[:0]
	buf, err := expand(buf, counter)
	if err != nil {
		return chunks.Meta{}, buf, fmt.Errorf("counter aggregate: %w", err)
	}
	if len(buf) > 0 {
		b.start(aggrchunk.Counter)
		b.append(aggrchunk.Counter, buf[0].t, buf[0].v)
		agg = aggregator{}
		last := aggregateWindows(buf, resolution, &agg, func(t int64) {
			b.window(t)
			b.append(aggrchunk.Counter, t, agg.counter)
		})
		b.append(aggrchunk.Counter, last, counter.LastRaw())
	}
	m, err := b.meta()
	return m, buf, err
}

// expand appends the float samples of it to buf, leaving out stale markers and samples
// that go back in time.
func expand(buf []sample, it chunkenc.Iterator) ([]sample, error) {
	lastT := int64(math.MinInt64)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		if vt != chunkenc.ValFloat {
			return buf, fmt.Errorf("unexpected %s sample", vt)
		}
		t, v := it.At()
		if value.IsStaleNaN(v) || t < lastT {
			continue
		}
		buf = append(buf, sample{t: t, v: v})
		lastT = t
	}
	return buf, it.Err()
}
