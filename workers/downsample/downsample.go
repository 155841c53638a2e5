package downsample

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// inputError marks a failure to read the input block: it is not a valid block, and no retry
// will read it better.
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() error { return e.err }

// isInputError reports whether err says the input block cannot be read.
func isInputError(err error) bool {
	var ie inputError
	return errors.As(err, &ie)
}

// Result describes a block Block wrote.
type Result struct {
	Meta block.Meta
	// InputSamples is how many raw or aggregated samples were read.
	InputSamples uint64
	// SkippedHistogramSeries counts series whose native histograms were left out because
	// they could not be aggregated (e.g. custom bucket bounds mixed with exponential ones).
	SkippedHistogramSeries int
}

// Block downsamples the block in dir, whose meta.json is meta, to resolution and writes the
// result as block id into outDir (created; the caller removes it on error). The output keeps
// the input's time range, compaction section (level, sources) and external labels, and gets
// the resolution, source "compactor", recomputed stats, files and index stats. Errors that
// mean the input cannot be read are told apart by isInputError.
func Block(ctx context.Context, log zerolog.Logger, dir string, meta block.Meta, outDir string, id ulid.ULID, resolution int64) (res Result, err error) {
	inRes := meta.Thanos.Downsample.Resolution
	if resolution <= inRes {
		return res, fmt.Errorf("target resolution %d is not coarser than the block's %d", resolution, inRes)
	}
	ir, err := index.NewFileReader(filepath.Join(dir, block.IndexFilename), index.DecodePostingsRaw)
	if err != nil {
		return res, inputError{fmt.Errorf("open index: %w", err)}
	}
	defer ir.Close()
	cr, err := chunks.NewDirReader(filepath.Join(dir, block.ChunksDirname), aggrchunk.NewPool())
	if err != nil {
		return res, inputError{fmt.Errorf("open chunks: %w", err)}
	}
	defer cr.Close()

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return res, err
	}
	w, err := newBlockWriter(ctx, outDir, ir.Symbols())
	if err != nil {
		return res, err
	}
	closed := false
	defer func() {
		if !closed {
			w.abort()
		}
	}()

	name, value := index.AllPostingsKey()
	postings, err := ir.Postings(ctx, name, value)
	if err != nil {
		return res, inputError{fmt.Errorf("all postings: %w", err)}
	}
	d := seriesDownsampler{inRes: inRes, res: resolution, log: log}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		n       int
	)
	for postings.Next() {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
		n++
		ref := postings.At()
		if err := ir.Series(ref, &builder, &chks); err != nil {
			return res, inputError{fmt.Errorf("series %d: %w", ref, err)}
		}
		lset := builder.Labels()
		if err := loadChunks(cr, chks); err != nil {
			return res, inputError{fmt.Errorf("series %s: %w", lset, err)}
		}
		for _, c := range chks {
			res.InputSamples += uint64(c.Chunk.NumSamples())
		}
		out, err := d.series(lset, chks)
		if err != nil {
			return res, inputError{fmt.Errorf("series %s: %w", lset, err)}
		}
		if err := w.add(lset, out); err != nil {
			return res, err
		}
	}
	if err := postings.Err(); err != nil {
		return res, inputError{fmt.Errorf("iterate postings: %w", err)}
	}
	closed = true
	if err := w.close(); err != nil {
		return res, err
	}

	seriesMax, err := verifyIndex(ctx, outDir, meta.MinTime, meta.MaxTime)
	if err != nil {
		// Samples outside the input's own time range end up here; no retry changes them.
		return res, inputError{fmt.Errorf("output failed verification: %w", err)}
	}
	out := meta
	out.ULID = id
	out.Version = 1
	out.Stats = w.stats
	out.Thanos.Downsample.Resolution = resolution
	out.Thanos.Source = block.SourceCompactor
	out.Thanos.UploadTime = nil
	out.Thanos.IndexStats = &block.IndexStats{SeriesMaxSize: seriesMax, ChunkMaxSize: w.chunkMaxSize}
	if out.Thanos.Files, err = block.GatherFiles(outDir, true); err != nil {
		return res, fmt.Errorf("gather files: %w", err)
	}
	out.Thanos.SegmentFiles = block.SegmentFiles(out.Thanos.Files)
	if err := block.WriteMetaFile(outDir, out); err != nil {
		return res, err
	}
	res.Meta = out
	res.SkippedHistogramSeries = d.skippedHistograms
	return res, nil
}

// loadChunks reads the chunks of one series, which must be in time order without overlaps.
func loadChunks(cr tsdb.ChunkReader, chks []chunks.Meta) error {
	for i := range chks {
		if i > 0 && chks[i-1].MaxTime >= chks[i].MinTime {
			return fmt.Errorf("chunks overlap or are out of order: [%d, %d] then [%d, %d]",
				chks[i-1].MinTime, chks[i-1].MaxTime, chks[i].MinTime, chks[i].MaxTime)
		}
		c, _, err := cr.ChunkOrIterable(chks[i])
		if err != nil {
			return fmt.Errorf("chunk %d: %w", chks[i].Ref, err)
		}
		if c == nil {
			return fmt.Errorf("chunk %d: not a stored chunk", chks[i].Ref)
		}
		chks[i].Chunk = c
	}
	return nil
}

// seriesDownsampler downsamples one series at a time, reusing its buffers.
type seriesDownsampler struct {
	inRes, res int64
	log        zerolog.Logger

	samples []sample
	fixed   []chunks.Meta
	run     []*aggrchunk.Chunk
	out     []chunks.Meta
	it      chunkenc.Iterator

	// skippedHistograms counts series whose native histograms could not be aggregated.
	skippedHistograms int
	skipped           bool
}

// series returns the output chunks of one series; they are valid until the next call.
func (d *seriesDownsampler) series(lset labels.Labels, chks []chunks.Meta) ([]chunks.Meta, error) {
	d.out, d.skipped = d.out[:0], false
	var err error
	if d.inRes == schemas.ResRaw {
		err = d.raw(lset, chks)
	} else {
		err = d.downsampled(lset, chks)
	}
	if d.skipped {
		d.skippedHistograms++
	}
	return d.out, err
}

// raw downsamples raw chunks. Float and histogram chunks are downsampled in separate runs,
// so a switch between them starts a new output chunk, as in Thanos.
func (d *seriesDownsampler) raw(lset labels.Labels, chks []chunks.Meta) error {
	d.samples = d.samples[:0]
	for i, c := range chks {
		hist := isHistogram(c.Chunk.Encoding())
		if i > 0 && hist != isHistogram(chks[i-1].Chunk.Encoding()) {
			if err := d.flushRaw(lset); err != nil {
				return err
			}
		}
		d.it = c.Chunk.Iterator(d.it)
		var err error
		if hist {
			d.samples, err = expandHistograms(d.samples, d.it)
		} else {
			d.samples, err = expand(d.samples, d.it)
		}
		if err != nil {
			return fmt.Errorf("chunk %d: %w", c.Ref, err)
		}
	}
	return d.flushRaw(lset)
}

// flushRaw downsamples the run of samples gathered so far.
func (d *seriesDownsampler) flushRaw(lset labels.Labels) error {
	n := len(d.out)
	out, err := downsampleRaw(d.out, d.samples, d.res)
	d.samples = d.samples[:0]
	if d.skipHistograms(lset, err) {
		d.out = out[:n]
		return nil
	}
	d.out = out
	return err
}

// skipHistograms reports whether err is about native histograms that cannot be aggregated,
// which costs those histograms but not the block.
func (d *seriesDownsampler) skipHistograms(lset labels.Labels, err error) bool {
	var he histogramError
	if !errors.As(err, &he) {
		return false
	}
	d.skipped = true
	d.log.Warn().Err(err).Stringer("series", lset).Msg("native histograms left out of the downsampled block")
	return true
}

// downsampled re-aggregates the chunks of a downsampled block. A raw chunk found there (an
// old Thanos bug wrote some) is first downsampled to 5m; an empty one is dropped.
func (d *seriesDownsampler) downsampled(lset labels.Labels, chks []chunks.Meta) error {
	d.fixed = d.fixed[:0]
	for _, c := range chks {
		if _, ok := c.Chunk.(*aggrchunk.Chunk); ok {
			d.fixed = append(d.fixed, c)
			continue
		}
		if c.Chunk.NumSamples() == 0 {
			d.log.Warn().Stringer("series", lset).Msg("empty raw chunk in a downsampled block; dropped")
			continue
		}
		d.it = c.Chunk.Iterator(d.it)
		var err error
		if isHistogram(c.Chunk.Encoding()) {
			d.samples, err = expandHistograms(d.samples[:0], d.it)
		} else {
			d.samples, err = expand(d.samples[:0], d.it)
		}
		if err != nil {
			return fmt.Errorf("chunk %d: %w", c.Ref, err)
		}
		n := len(d.fixed)
		if d.fixed, err = downsampleRaw(d.fixed, d.samples, schemas.Res5m); d.skipHistograms(lset, err) {
			d.fixed = d.fixed[:n]
		} else if err != nil {
			return err
		}
	}

	// Runs of float and of histogram chunks are downsampled apart, as in Thanos.
	d.run = d.run[:0]
	var mint, maxt int64
	flush := func() error {
		n := len(d.out)
		out, buf, err := downsampleAggr(d.out, d.run, mint, maxt, d.inRes, d.res, d.samples)
		d.samples, d.run = buf, d.run[:0]
		if d.skipHistograms(lset, err) {
			d.out = out[:n]
			return nil
		}
		d.out = out
		return err
	}
	for i, c := range d.fixed {
		ac := c.Chunk.(*aggrchunk.Chunk)
		if i > 0 && ac.IsHistogram() != d.fixed[i-1].Chunk.(*aggrchunk.Chunk).IsHistogram() {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(d.run) == 0 {
			mint = c.MinTime
		}
		maxt = c.MaxTime
		d.run = append(d.run, ac)
	}
	return flush()
}

func isHistogram(e chunkenc.Encoding) bool {
	switch e {
	case chunkenc.EncHistogram, chunkenc.EncFloatHistogram, chunkenc.EncHistogramST, chunkenc.EncFloatHistogramST:
		return true
	}
	return false
}

// verifyIndex reads back the index written to dir: series in label order, chunks in time
// order, without overlaps, inside [mint, maxt). It returns the largest series entry,
// measured as Thanos does by the distance between consecutive series references.
func verifyIndex(ctx context.Context, dir string, mint, maxt int64) (seriesMaxSize int64, err error) {
	ir, err := index.NewFileReader(filepath.Join(dir, block.IndexFilename), index.DecodePostingsRaw)
	if err != nil {
		return 0, err
	}
	defer ir.Close()
	name, value := index.AllPostingsKey()
	postings, err := ir.Postings(ctx, name, value)
	if err != nil {
		return 0, err
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		prev    labels.Labels
		prevRef uint64
		started bool
	)
	for postings.Next() {
		ref := postings.At()
		if err := ir.Series(ref, &builder, &chks); err != nil {
			return 0, fmt.Errorf("series %d: %w", ref, err)
		}
		lset := builder.Labels()
		if started && labels.Compare(prev, lset) >= 0 {
			return 0, fmt.Errorf("series %s after %s", lset, prev)
		}
		for i, c := range chks {
			switch {
			case c.MinTime < mint || c.MaxTime >= maxt:
				return 0, fmt.Errorf("series %s: chunk [%d, %d] outside the block [%d, %d)", lset, c.MinTime, c.MaxTime, mint, maxt)
			case c.MinTime > c.MaxTime, i > 0 && chks[i-1].MaxTime >= c.MinTime:
				return 0, fmt.Errorf("series %s: chunks out of order at [%d, %d]", lset, c.MinTime, c.MaxTime)
			}
		}
		if started {
			// Series entries are 16-byte aligned and a reference is the offset / 16.
			seriesMaxSize = max(seriesMaxSize, int64(uint64(ref)-prevRef)*16)
		}
		prev, prevRef, started = lset, uint64(ref), true
	}
	return seriesMaxSize, postings.Err()
}
