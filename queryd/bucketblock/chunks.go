package bucketblock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errClosed guards against a chunk reader used after Close.
var errClosed = errors.New("chunk reader is closed")

// window is a range of one segment held in memory. Chunks handed out keep pointing into
// data, so a window is never reused: dropping it from the cache is enough.
type window struct {
	seg  int
	off  int64
	data []byte
}

// chunkReader is a tsdb.ChunkReader over the block's segments in the bucket. A chunk
// record at ref (segment<<32 | offset) is uvarint(len) | encoding | data | CRC32C.
type chunkReader struct {
	b      *Block
	closed atomic.Bool
}

func (r *chunkReader) ChunkOrIterable(meta chunks.Meta) (chunkenc.Chunk, chunkenc.Iterable, error) {
	if r.closed.Load() {
		return nil, nil, errClosed
	}
	chk, err := r.b.chunk(meta.Ref)
	return chk, nil, err
}

func (r *chunkReader) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	b.readers--
	if b.readers == 0 {
		b.windows = nil
	}
	return nil
}

func (b *Block) chunk(ref chunks.ChunkRef) (chunkenc.Chunk, error) {
	seg, start := chunks.BlockChunkRef(ref).Unpack()
	if seg >= len(b.segments) {
		return nil, fmt.Errorf("block %s: chunk %d: segment index %d out of range", b.id, ref, seg)
	}
	size := b.segments[seg].size
	off := int64(start)
	if off < chunks.SegmentHeaderSize || off >= size {
		return nil, fmt.Errorf("block %s: chunk %d: offset %d outside segment %s of %d bytes", b.id, ref, off, b.segments[seg].name, size)
	}
	head, err := b.read(seg, off, min(chunks.MaxChunkLengthFieldSize, size-off))
	if err != nil {
		return nil, err
	}
	dataLen, n := binary.Uvarint(head)
	if n <= 0 {
		return nil, fmt.Errorf("block %s: chunk %d: reading chunk length failed with %d", b.id, ref, n)
	}
	total := int64(n) + chunks.ChunkEncodingSize + int64(dataLen) + crc32.Size
	if off+total > size {
		return nil, fmt.Errorf("block %s: chunk %d: %d bytes past the end of segment %s", b.id, ref, off+total-size, b.segments[seg].name)
	}
	rec, err := b.read(seg, off, total)
	if err != nil {
		return nil, err
	}
	encAndData := rec[n : total-crc32.Size]
	if got, want := crc32.Checksum(encAndData, castagnoli), binary.BigEndian.Uint32(rec[total-crc32.Size:]); got != want {
		return nil, fmt.Errorf("block %s: chunk %d: checksum mismatch expected:%x, actual:%x", b.id, ref, want, got)
	}
	return b.cache.pool.Get(chunkenc.Encoding(encAndData[0]), encAndData[chunks.ChunkEncodingSize:])
}

// read returns length bytes of segment seg at off, from a cached window or from a new
// range read of at least the read-ahead size: the chunks of one series, and of series
// next to each other in the index, are next to each other in the segment.
func (b *Block) read(seg int, off, length int64) ([]byte, error) {
	b.mu.Lock()
	for i, w := range b.windows {
		if w.seg == seg && off >= w.off && off+length <= w.off+int64(len(w.data)) {
			copy(b.windows[1:i+1], b.windows[:i])
			b.windows[0] = w
			b.mu.Unlock()
			return w.data[off-w.off : off-w.off+length], nil
		}
	}
	b.mu.Unlock()

	s := b.segments[seg]
	n := min(max(b.cache.readAhead, length), s.size-off)
	data, err := b.cache.readRange(s.name, off, n)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", b.id, err)
	}
	b.mu.Lock()
	if b.readers > 0 {
		b.windows = append([]window{{seg: seg, off: off, data: data}}, b.windows...)
		if len(b.windows) > b.cache.windows {
			clear(b.windows[b.cache.windows:]) // let the evicted window's bytes go
			b.windows = b.windows[:b.cache.windows]
		}
	}
	b.mu.Unlock()
	return data[:length], nil
}

func (c *Cache) readRange(name string, off, length int64) ([]byte, error) {
	c.m.rangeReads.Inc()
	rc, err := c.bkt.GetRange(c.ctx, name, off, length)
	if err != nil {
		c.m.rangeReadErrors.Inc()
		return nil, fmt.Errorf("read %s [%d, %d): %w", name, off, off+length, err)
	}
	defer rc.Close()
	data := make([]byte, length)
	if _, err := io.ReadFull(rc, data); err != nil {
		c.m.rangeReadErrors.Inc()
		return nil, fmt.Errorf("read %s [%d, %d): %w", name, off, off+length, err)
	}
	c.m.rangeReadBytes.Add(float64(length))
	return data, nil
}
