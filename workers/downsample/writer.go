package downsample

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
)

// blockWriter writes a block one series at a time, in label order, straight to its chunk
// segments and index, so memory holds one series, never the block.
type blockWriter struct {
	chunkw *chunks.Writer
	indexw *index.Writer
	ref    storage.SeriesRef
	stats  tsdb.BlockStats
	// chunkMaxSize is the largest chunk record written (length, encoding, data, CRC).
	chunkMaxSize int64
	scratch      [binary.MaxVarintLen64]byte
}

// newBlockWriter starts a block in dir. The index needs every symbol before the first
// series, so symbols must list all the label names and values that will be written.
func newBlockWriter(ctx context.Context, dir string, symbols index.StringIter) (w *blockWriter, err error) {
	w = &blockWriter{}
	if w.chunkw, err = chunks.NewWriter(filepath.Join(dir, block.ChunksDirname)); err != nil {
		return nil, fmt.Errorf("chunk writer: %w", err)
	}
	if w.indexw, err = index.NewWriter(ctx, filepath.Join(dir, block.IndexFilename)); err != nil {
		w.chunkw.Close()
		return nil, fmt.Errorf("index writer: %w", err)
	}
	for symbols.Next() {
		if err := w.indexw.AddSymbol(symbols.At()); err != nil {
			w.abort()
			return nil, fmt.Errorf("add symbol: %w", err)
		}
	}
	if err := symbols.Err(); err != nil {
		w.abort()
		return nil, inputError{fmt.Errorf("read symbols: %w", err)}
	}
	return w, nil
}

// add writes one series; a series without chunks is left out.
func (w *blockWriter) add(lset labels.Labels, chks []chunks.Meta) error {
	if len(chks) == 0 {
		return nil
	}
	if err := w.chunkw.WriteChunks(chks...); err != nil {
		return fmt.Errorf("write chunks: %w", err)
	}
	if err := w.indexw.AddSeries(w.ref, lset, chks...); err != nil {
		return fmt.Errorf("add series %s: %w", lset, err)
	}
	w.ref++
	w.stats.NumSeries++
	w.stats.NumChunks += uint64(len(chks))
	for _, c := range chks {
		n := uint64(c.Chunk.NumSamples())
		w.stats.NumSamples += n
		if ac, ok := c.Chunk.(*aggrchunk.Chunk); ok && ac.IsHistogram() {
			w.stats.NumHistogramSamples += n
		} else {
			w.stats.NumFloatSamples += n
		}
		size := len(c.Chunk.Bytes())
		record := len(binary.AppendUvarint(w.scratch[:0], uint64(size))) + chunks.ChunkEncodingSize + size + crc32.Size
		w.chunkMaxSize = max(w.chunkMaxSize, int64(record))
	}
	return nil
}

// close finishes the chunk segments, then the index.
func (w *blockWriter) close() error {
	errc := w.chunkw.Close()
	if errc != nil {
		errc = fmt.Errorf("close chunks: %w", errc)
	}
	erri := w.indexw.Close()
	if erri != nil {
		erri = fmt.Errorf("close index: %w", erri)
	}
	return errors.Join(errc, erri)
}

// abort closes what is open after a failure; the caller removes the directory.
func (w *blockWriter) abort() {
	w.chunkw.Close()
	w.indexw.Close()
}
