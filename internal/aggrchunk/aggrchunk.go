// Package aggrchunk is the chunk format of downsampled blocks, as Thanos writes it: a chunk
// with encoding 0xFF whose data holds up to five sub-chunks, one per aggregate of the raw
// samples in each downsampling window (count, sum, min, max and a reset-corrected counter).
// It encodes and decodes such chunks, lets Prometheus' TSDB readers open downsampled blocks
// (NewPool), and turns a series' chunks into the samples a query asks for (SeriesIterator).
//
// The data of a 0xFF chunk is, for each aggregate in the order count, sum, min, max, counter:
// uvarint(len) and, when len > 0, one byte of sub-chunk encoding (a chunkenc value: 1 XOR,
// 3 FloatHistogram) followed by len bytes of sub-chunk data. len 0 means the aggregate is
// absent (native-histogram chunks carry no min and max).
package aggrchunk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// Encoding is the chunk encoding of downsampled chunks. Thanos took the highest value so
// that no Prometheus encoding will ever collide with it.
const Encoding = chunkenc.Encoding(0xFF)

// Aggr names one aggregate of a downsampled chunk; its value is the sub-chunk's position.
type Aggr uint8

// The aggregates, in their order inside a chunk.
const (
	Count Aggr = iota
	Sum
	Min
	Max
	Counter
)

// NumAggrs is the number of aggregates a chunk has room for.
const NumAggrs = 5

func (a Aggr) String() string {
	switch a {
	case Count:
		return "count"
	case Sum:
		return "sum"
	case Min:
		return "min"
	case Max:
		return "max"
	case Counter:
		return "counter"
	}
	return fmt.Sprintf("aggr(%d)", uint8(a))
}

// ErrAbsent is returned for an aggregate the chunk does not hold.
var ErrAbsent = errors.New("aggregate absent")

// Chunk is one downsampled chunk. It implements chunkenc.Chunk so that Prometheus' chunk
// writer, readers and compactor carry it unchanged; it cannot be appended to.
type Chunk struct {
	b []byte
}

// Encode builds a chunk from one sub-chunk per aggregate, indexed by Aggr; a nil sub-chunk
// is an absent aggregate.
func Encode(subs [NumAggrs]chunkenc.Chunk) *Chunk {
	n := 0
	for _, s := range subs {
		n += binary.MaxVarintLen64
		if s != nil {
			n += 1 + len(s.Bytes())
		}
	}
	b := make([]byte, 0, n)
	for _, s := range subs {
		if s == nil {
			b = binary.AppendUvarint(b, 0)
			continue
		}
		data := s.Bytes()
		b = binary.AppendUvarint(b, uint64(len(data)))
		b = append(b, byte(s.Encoding()))
		b = append(b, data...)
	}
	return &Chunk{b: b}
}

// FromData returns the chunk whose data is b, without copying b. Its structure is checked
// when an aggregate is read.
func FromData(b []byte) *Chunk { return &Chunk{b: b} }

// Bytes implements chunkenc.Chunk.
func (c *Chunk) Bytes() []byte { return c.b }

// Encoding implements chunkenc.Chunk.
func (c *Chunk) Encoding() chunkenc.Encoding { return Encoding }

// Appender implements chunkenc.Chunk: downsampled chunks are written whole, by Encode.
func (c *Chunk) Appender() (chunkenc.Appender, error) {
	return nil, errors.New("downsampled chunks cannot be appended to")
}

// NumSamples is the number of windows the chunk aggregates: the samples of its count
// aggregate (0 for a malformed chunk).
func (c *Chunk) NumSamples() int {
	cnt, err := c.Get(Count)
	if err != nil {
		return 0
	}
	return cnt.NumSamples()
}

// Compact implements chunkenc.Chunk.
func (c *Chunk) Compact() {}

// Reset implements chunkenc.Chunk.
func (c *Chunk) Reset(stream []byte) { c.b = stream }

// Iterator implements chunkenc.Chunk. A chunk read without naming an aggregate yields the
// average of each window (sum/count), which is what Thanos' querier shows for a selector
// that no aggregating function wraps.
func (c *Chunk) Iterator(chunkenc.Iterator) chunkenc.Iterator {
	return SeriesIterator([]chunkenc.Chunk{c}, nil)
}

// Get returns the sub-chunk of aggregate a, or an error wrapping ErrAbsent.
func (c *Chunk) Get(a Aggr) (chunkenc.Chunk, error) {
	enc, data, err := c.sub(a)
	if err != nil {
		return nil, err
	}
	chk, err := chunkenc.FromData(enc, data)
	if err != nil {
		return nil, fmt.Errorf("%s aggregate: %w", a, err)
	}
	return chk, nil
}

// SubEncoding returns the encoding of aggregate a's sub-chunk, or an error wrapping ErrAbsent.
func (c *Chunk) SubEncoding(a Aggr) (chunkenc.Encoding, error) {
	enc, _, err := c.sub(a)
	return enc, err
}

// IsHistogram reports whether the chunk aggregates native histograms: its counter is a
// float-histogram chunk.
func (c *Chunk) IsHistogram() bool {
	enc, err := c.SubEncoding(Counter)
	return err == nil && (enc == chunkenc.EncFloatHistogram || enc == chunkenc.EncHistogram)
}

// sub finds aggregate a's encoding and data.
func (c *Chunk) sub(a Aggr) (chunkenc.Encoding, []byte, error) {
	if a >= NumAggrs {
		return 0, nil, fmt.Errorf("unknown aggregate %d", a)
	}
	b := c.b
	for i := Aggr(0); ; i++ {
		n, w := binary.Uvarint(b)
		if w <= 0 {
			return 0, nil, fmt.Errorf("downsampled chunk: bad length of the %s aggregate", i)
		}
		b = b[w:]
		if n == 0 {
			if i == a {
				return 0, nil, fmt.Errorf("%s: %w", a, ErrAbsent)
			}
			continue
		}
		if uint64(len(b)) < 1+n {
			return 0, nil, fmt.Errorf("downsampled chunk: %s aggregate needs %d bytes, %d left", i, 1+n, len(b))
		}
		if i == a {
			return chunkenc.Encoding(b[0]), b[1 : 1+n], nil
		}
		b = b[1+n:]
	}
}
