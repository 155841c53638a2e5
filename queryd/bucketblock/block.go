// Package bucketblock reads a catalogued block straight from the bucket as a
// tsdb.BlockReader, so Prometheus' block queriers and the PromQL engine run on it
// unchanged. The index is downloaded once into a bounded local disk cache and mmapped;
// chunks are fetched with range reads through a read-ahead window. Nothing is listed:
// object names and sizes come from the catalogue record.
package bucketblock

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/tsdb/tombstones"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
)

// Block is one block of the bucket. Its methods are safe for concurrent use.
type Block struct {
	id         ulid.ULID
	meta       tsdb.BlockMeta
	labels     labels.Labels
	resolution int64
	indexSize  int64 // -1: unknown, any cached file is reused
	segments   []segment
	size       int64
	cache      *Cache
	dropped    atomic.Bool

	mu sync.Mutex
	// readers counts open chunk readers; the read-ahead windows are kept while any is open.
	readers int
	windows []window // most recently used first
}

type segment struct {
	name string // object name: <ulid>/chunks/000001
	size int64
}

// New returns the reader of the block rec describes. It touches neither the bucket nor
// the disk: the index is fetched on first use.
func New(rec schemas.BlockRecord, cache *Cache) (*Block, error) {
	b := &Block{
		id: rec.ULID,
		meta: tsdb.BlockMeta{
			ULID:    rec.ULID,
			MinTime: rec.MinTime,
			MaxTime: rec.MaxTime,
			Stats:   tsdb.BlockStats{NumSeries: rec.NumSeries, NumSamples: rec.NumSamples},
			Compaction: tsdb.BlockMetaCompaction{
				Level:   rec.Level,
				Sources: slices.Clone(rec.Sources),
			},
			Version: 1,
		},
		labels:     labels.FromMap(rec.Labels),
		resolution: rec.Resolution,
		indexSize:  -1,
		cache:      cache,
	}
	// Segment i of a chunk reference is the i-th chunks/ file in name order, as
	// Prometheus' chunks.NewDirReader numbers them.
	files := slices.Clone(rec.Files)
	slices.SortFunc(files, func(a, b schemas.File) int { return strings.Compare(a.RelPath, b.RelPath) })
	for _, f := range files {
		b.size += f.Size
		if f.RelPath == block.IndexFilename && f.Size > 0 {
			b.indexSize = f.Size
		}
		name, ok := strings.CutPrefix(f.RelPath, block.ChunksDirname+"/")
		if !ok {
			continue
		}
		if _, err := strconv.ParseUint(name, 10, 64); err != nil {
			continue
		}
		if f.Size <= chunks.SegmentHeaderSize {
			return nil, fmt.Errorf("block %s: segment %s has no chunks (size %d)", rec.ULID, f.RelPath, f.Size)
		}
		b.segments = append(b.segments, segment{name: rec.ULID.String() + "/" + f.RelPath, size: f.Size})
	}
	if len(b.segments) == 0 {
		return nil, fmt.Errorf("block %s: the record lists no chunk segments", rec.ULID)
	}
	return b, nil
}

// ID is the block's ULID.
func (b *Block) ID() ulid.ULID { return b.id }

// Labels are the block's external labels.
func (b *Block) Labels() labels.Labels { return b.labels }

// Resolution is the block's downsampling resolution in milliseconds (0: raw).
func (b *Block) Resolution() int64 { return b.resolution }

// Meta implements tsdb.BlockReader.
func (b *Block) Meta() tsdb.BlockMeta { return b.meta }

// Size implements tsdb.BlockReader: the bytes of the block's files in the bucket.
func (b *Block) Size() int64 { return b.size }

// Prepare makes the index available locally within ctx (downloading it if needed), so
// the wait for a slow download is bounded by the query rather than by the cache, and
// keeps it there until release is called.
func (b *Block) Prepare(ctx context.Context) (release func(), err error) {
	_, release, err = b.cache.acquire(ctx, b)
	return release, err
}

// Index implements tsdb.BlockReader. The index stays open, and on disk, until the
// returned reader is closed.
func (b *Block) Index() (tsdb.IndexReader, error) {
	r, release, err := b.cache.acquire(b.cache.ctx, b)
	if err != nil {
		return nil, err
	}
	return &indexReader{Reader: r, release: release}, nil
}

// Chunks implements tsdb.BlockReader.
func (b *Block) Chunks() (tsdb.ChunkReader, error) {
	if b.dropped.Load() {
		return nil, fmt.Errorf("block %s: %w", b.id, ErrDeleted)
	}
	b.mu.Lock()
	b.readers++
	b.mu.Unlock()
	return &chunkReader{b: b}, nil
}

// Tombstones implements tsdb.BlockReader; bucket blocks never carry tombstones.
func (b *Block) Tombstones() (tombstones.Reader, error) {
	return tombstones.NewMemTombstones(), nil
}

// Drop says the block is deleted: new reads fail and its cached files are removed once
// the readers still open are closed.
func (b *Block) Drop() {
	b.dropped.Store(true)
	b.cache.drop(b.id)
}

// indexReader is the shared, mmapped index of a block, with label lookups by matchers
// (which index.Reader leaves to its caller) and a Close that gives the reference back.
type indexReader struct {
	*index.Reader
	release func()
}

func (r *indexReader) Close() error {
	r.release()
	return nil
}

func (r *indexReader) SortedLabelValues(ctx context.Context, name string, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.Reader.SortedLabelValues(ctx, name, hints)
	}
	values, err := r.LabelValues(ctx, name, hints, matchers...)
	slices.Sort(values)
	return values, err
}

func (r *indexReader) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.Reader.LabelValues(ctx, name, hints)
	}
	values, err := r.Reader.LabelValues(ctx, name, nil)
	if err != nil {
		return nil, fmt.Errorf("values of label %s: %w", name, err)
	}
	// Matchers on the label itself filter its values; the others select series.
	var bySeries bool
	for _, m := range matchers {
		if m.Name != name {
			bySeries = true
			continue
		}
		values = slices.DeleteFunc(values, func(v string) bool { return !m.Matches(v) })
	}
	if len(values) == 0 {
		return nil, nil
	}
	if !bySeries {
		values, _ = hints.ApplyLimit(values)
		return values, nil
	}
	matching, err := tsdb.PostingsForMatchers(ctx, r, matchers...)
	if err != nil {
		return nil, fmt.Errorf("postings for matchers: %w", err)
	}
	perValue := make([]index.Postings, len(values))
	for i, v := range values {
		if perValue[i], err = r.Postings(ctx, name, v); err != nil {
			return nil, fmt.Errorf("postings of %s=%q: %w", name, v, err)
		}
	}
	found, err := index.FindIntersectingPostings(matching, perValue)
	if err != nil {
		return nil, fmt.Errorf("intersect postings: %w", err)
	}
	out := make([]string, 0, len(found))
	for _, i := range found {
		out = append(out, values[i])
	}
	out, _ = hints.ApplyLimit(out)
	return out, nil
}

func (r *indexReader) LabelNames(ctx context.Context, matchers ...*labels.Matcher) ([]string, error) {
	if len(matchers) == 0 {
		return r.Reader.LabelNames(ctx)
	}
	p, err := tsdb.PostingsForMatchers(ctx, r, matchers...)
	if err != nil {
		return nil, err
	}
	return r.LabelNamesFor(ctx, p)
}
