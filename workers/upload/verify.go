package upload

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"

	"github.com/blockflow/blockflow/internal/block"
)

// Verify reads the whole block in dir and reports the first problem: an index that does
// not open (a truncated file fails its table-of-contents checksum), series or label names
// out of order, a chunk outside the block's time range, or a chunk reference that does not
// land on a whole, checksummed chunk inside the segment files (a truncated segment). It
// streams: memory is bounded by the largest series, not by the block.
//
// It opens the index and the chunk segments with the readers tsdb.OpenBlock uses, one at
// a time, so that an error names the part that is broken.
func Verify(ctx context.Context, dir string, meta block.Meta) (err error) {
	ir, err := index.NewFileReader(filepath.Join(dir, block.IndexFilename), index.DecodePostingsRaw)
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	defer func() { err = errors.Join(err, ir.Close()) }()
	pool := chunkenc.NewPool()
	cr, err := chunks.NewDirReader(filepath.Join(dir, block.ChunksDirname), pool)
	if err != nil {
		return fmt.Errorf("chunks: %w", err)
	}
	defer func() { err = errors.Join(err, cr.Close()) }()
	segments, err := segmentNames(filepath.Join(dir, block.ChunksDirname))
	if err != nil {
		return fmt.Errorf("chunks: %w", err)
	}

	name, value := index.AllPostingsKey()
	postings, err := ir.Postings(ctx, name, value)
	if err != nil {
		return fmt.Errorf("index: all postings: %w", err)
	}
	var (
		builder labels.ScratchBuilder
		chks    []chunks.Meta
		prev    labels.Labels
		series  uint64
		lastRef storage.SeriesRef
	)
	for postings.Next() {
		if series%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		ref := postings.At()
		if series > 0 && ref <= lastRef {
			return fmt.Errorf("index: postings not increasing: series ref %d after %d", ref, lastRef)
		}
		lastRef = ref
		if err := ir.Series(ref, &builder, &chks); err != nil {
			return fmt.Errorf("index: series ref %d: %w", ref, err)
		}
		lset := builder.Labels()
		if err := checkLabels(lset); err != nil {
			return fmt.Errorf("index: series %s: %w", lset, err)
		}
		if series > 0 && labels.Compare(prev, lset) >= 0 {
			return fmt.Errorf("index: series %s is not after %s", lset, prev)
		}
		for _, c := range chks {
			// Closed interval, as Thanos checks: maxTime is exclusive by one millisecond
			// but blocks cut by older writers reach it.
			if c.MinTime > c.MaxTime || c.MinTime < meta.MinTime || c.MaxTime > meta.MaxTime {
				return fmt.Errorf("series %s: chunk [%d, %d] outside block [%d, %d]", lset, c.MinTime, c.MaxTime, meta.MinTime, meta.MaxTime)
			}
			chk, _, err := cr.ChunkOrIterable(c)
			if err != nil {
				seg, off := chunks.BlockChunkRef(c.Ref).Unpack()
				file := fmt.Sprintf("segment %d", seg)
				if seg < len(segments) {
					file = block.ChunksDirname + "/" + segments[seg]
				}
				return fmt.Errorf("series %s: chunk at offset %d of %s: %w", lset, off, file, err)
			}
			if chk != nil {
				_ = pool.Put(chk)
			}
		}
		prev = lset
		series++
	}
	if err := postings.Err(); err != nil {
		return fmt.Errorf("index: postings: %w", err)
	}
	if meta.Stats.NumSeries != 0 && series != meta.Stats.NumSeries {
		return fmt.Errorf("index has %d series, meta.json says %d", series, meta.Stats.NumSeries)
	}
	return nil
}

// checkLabels reports empty or unsorted, repeated label names.
func checkLabels(lset labels.Labels) error {
	if lset.IsEmpty() {
		return errors.New("no labels")
	}
	var prevName string
	var err error
	first := true
	lset.Range(func(l labels.Label) {
		switch {
		case err != nil:
		case l.Name == "":
			err = errors.New("empty label name")
		case !first && l.Name <= prevName:
			err = fmt.Errorf("label %q not after %q", l.Name, prevName)
		}
		prevName, first = l.Name, false
	})
	return err
}

// segmentNames lists the chunk segment files in the order chunk references count them
// (as the tsdb chunks reader does: numeric names, sorted).
func segmentNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, err := strconv.ParseUint(e.Name(), 10, 64); err == nil {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
