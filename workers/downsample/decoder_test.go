package downsample

// This file decodes a downsampled block's chunks straight from the segment file bytes,
// with a decoder written from the format descriptions alone (reference/thanos.md §1.5 and
// Prometheus' chunk format docs), sharing no code with the writer or with Prometheus'
// readers: if the writer drifted from the format, the two would disagree.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/schemas"
)

// segmentRecord is one chunk as the segment file stores it.
type segmentRecord struct {
	enc  byte
	data []byte
}

// parseSegment reads every chunk record of a segment file, by byte offset. The file starts
// with magic 0x85BD40DD (big endian), format version 1 and 3 zero bytes; each record is
// uvarint(len(data)), the encoding byte, data, and the CRC32-Castagnoli of encoding + data.
func parseSegment(b []byte) (map[uint64]segmentRecord, error) {
	if len(b) < 8 || binary.BigEndian.Uint32(b) != 0x85BD40DD || b[4] != 1 || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		return nil, fmt.Errorf("bad segment header % x", b[:min(8, len(b))])
	}
	table := crc32.MakeTable(crc32.Castagnoli)
	recs := map[uint64]segmentRecord{}
	for off := 8; off < len(b); {
		n, w := binary.Uvarint(b[off:])
		if w <= 0 {
			return nil, fmt.Errorf("offset %d: bad length", off)
		}
		start := off + w
		end := start + 1 + int(n)
		if end+4 > len(b) {
			return nil, fmt.Errorf("offset %d: record runs past the file", off)
		}
		if got, want := crc32.Checksum(b[start:end], table), binary.BigEndian.Uint32(b[end:]); got != want {
			return nil, fmt.Errorf("offset %d: crc %08x, stored %08x", off, got, want)
		}
		recs[uint64(off)] = segmentRecord{enc: b[start], data: b[start+1 : end]}
		off = end + 4
	}
	return recs, nil
}

// parseAggr splits a 0xFF chunk's data into its five aggregates (count, sum, min, max,
// counter): each is uvarint(len) and, when len > 0, an encoding byte and len bytes.
func parseAggr(b []byte) ([5]*segmentRecord, error) {
	var out [5]*segmentRecord
	for i := range out {
		n, w := binary.Uvarint(b)
		if w <= 0 {
			return out, fmt.Errorf("aggregate %d: bad length", i)
		}
		b = b[w:]
		if n == 0 {
			continue
		}
		if uint64(len(b)) < 1+n {
			return out, fmt.Errorf("aggregate %d: %d bytes left, need %d", i, len(b), 1+n)
		}
		out[i] = &segmentRecord{enc: b[0], data: b[1 : 1+n]}
		b = b[1+n:]
	}
	if len(b) != 0 {
		return out, fmt.Errorf("%d bytes after the counter", len(b))
	}
	return out, nil
}

// bitReader reads a byte slice most significant bit first.
type bitReader struct {
	b   []byte
	pos int // in bits
}

var errShort = errors.New("chunk data ends early")

func (r *bitReader) bits(n int) (uint64, error) {
	var v uint64
	for range n {
		if r.pos >= 8*len(r.b) {
			return 0, errShort
		}
		bit := (r.b[r.pos/8] >> (7 - r.pos%8)) & 1
		v = v<<1 | uint64(bit)
		r.pos++
	}
	return v, nil
}

func (r *bitReader) ReadByte() (byte, error) {
	v, err := r.bits(8)
	return byte(v), err
}

// decodeXOR decodes a Gorilla (XOR) chunk: a big-endian uint16 sample count; the first
// sample's timestamp as a varint and value as 64 raw bits; the second's timestamp delta as
// a uvarint; later timestamps as a delta of deltas behind a prefix (0: none; 10: 14 bits;
// 110: 17; 1110: 20; 1111: 64), two's complement; every value after the first as the XOR
// with the previous one: 0 for equal, 10 and the meaningful bits inside the previous
// leading/trailing zero window, or 11, 5 bits of leading zeros, 6 bits of meaningful bit
// count (0 meaning 64) and the bits.
func decodeXOR(b []byte) ([]pair, error) {
	if len(b) < 2 {
		return nil, errShort
	}
	n := int(binary.BigEndian.Uint16(b))
	r := &bitReader{b: b[2:]}
	var (
		out               []pair
		t, delta          int64
		vbits             uint64
		leading, trailing int
	)
	for i := range n {
		switch i {
		case 0:
			tt, err := binary.ReadVarint(r)
			if err != nil {
				return nil, err
			}
			t = tt
			if vbits, err = r.bits(64); err != nil {
				return nil, err
			}
			out = append(out, pair{t, math.Float64frombits(vbits)})
			continue
		case 1:
			d, err := binary.ReadUvarint(r)
			if err != nil {
				return nil, err
			}
			delta = int64(d)
		default:
			var prefix, size int
			for prefix < 4 {
				bit, err := r.bits(1)
				if err != nil {
					return nil, err
				}
				if bit == 0 {
					break
				}
				prefix++
			}
			size = []int{0, 14, 17, 20, 64}[prefix]
			if size > 0 {
				raw, err := r.bits(size)
				if err != nil {
					return nil, err
				}
				dod := int64(raw)
				if size < 64 && raw > 1<<(size-1) {
					dod = int64(raw) - 1<<size
				}
				delta += dod
			}
		}
		t += delta
		changed, err := r.bits(1)
		if err != nil {
			return nil, err
		}
		if changed == 1 {
			fresh, err := r.bits(1)
			if err != nil {
				return nil, err
			}
			if fresh == 1 {
				l, err := r.bits(5)
				if err != nil {
					return nil, err
				}
				m, err := r.bits(6)
				if err != nil {
					return nil, err
				}
				if m == 0 {
					m = 64
				}
				leading, trailing = int(l), 64-int(l)-int(m)
			}
			x, err := r.bits(64 - leading - trailing)
			if err != nil {
				return nil, err
			}
			vbits ^= x << trailing
		}
		out = append(out, pair{t, math.Float64frombits(vbits)})
	}
	return out, nil
}

// TestIndependentDecoder reads a 5m block's segment file byte by byte and decodes every
// chunk the index points at without the writer's code, then compares each aggregate with
// what the library reads through Prometheus' chunk reader and the downsampled pool.
func TestIndependentDecoder(t *testing.T) {
	rawDir, rawMeta := rawBlock(t, 4)
	dir, _ := downsampleDir(t, rawDir, rawMeta, schemas.Res5m)

	seg, err := os.ReadFile(filepath.Join(dir, "chunks", "000001"))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := parseSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	series := readBlock(t, dir)
	used := 0
	for _, s := range series {
		for _, m := range s.chunks {
			segIdx, off := chunks.BlockChunkRef(m.Ref).Unpack()
			rec, ok := recs[uint64(off)]
			if segIdx != 0 || !ok {
				t.Fatalf("%s: chunk ref %d (segment %d offset %d) is not a record", s.lset, m.Ref, segIdx, off)
			}
			used++
			if rec.enc != 0xFF {
				t.Fatalf("%s: chunk encoding %#x, want 0xFF", s.lset, rec.enc)
			}
			subs, err := parseAggr(rec.data)
			if err != nil {
				t.Fatalf("%s: %v", s.lset, err)
			}
			lib := decode(t, m)
			for i, want := range [][]pair{lib.count, lib.sum, lib.min, lib.max, lib.counter} {
				if subs[i] == nil || subs[i].enc != 1 {
					t.Fatalf("%s: aggregate %s is %+v, want an XOR chunk", s.lset, aggrchunk.Aggr(i), subs[i])
				}
				got, err := decodeXOR(subs[i].data)
				if err != nil {
					t.Fatalf("%s %s: %v", s.lset, aggrchunk.Aggr(i), err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s %s: independent decoder read %v, library %v", s.lset, aggrchunk.Aggr(i), got, want)
				}
			}
			// Every window's count in a full 5m window of 15s scrapes is 20.
			if c := lib.count[0].v; c != 20 {
				t.Errorf("%s: first window counts %v samples", s.lset, c)
			}
		}
	}
	if used != len(recs) || used == 0 {
		t.Errorf("the index points at %d chunks, the segment holds %d", used, len(recs))
	}
}
