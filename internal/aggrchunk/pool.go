package aggrchunk

import "github.com/prometheus/prometheus/tsdb/chunkenc"

// pool is Prometheus' chunk pool plus downsampled chunks.
type pool struct {
	prom chunkenc.Pool
}

// NewPool returns a chunk pool that understands encoding 0xFF besides Prometheus' own
// encodings. Pass it to tsdb.OpenBlock, chunks.NewDirReader or a compactor so they can read
// downsampled blocks; Prometheus' reader hands any encoding byte to its pool.
func NewPool() chunkenc.Pool {
	return &pool{prom: chunkenc.NewPool()}
}

// Get returns a chunk over b; a downsampled one keeps b without copying, as Prometheus'
// own chunks do.
func (p *pool) Get(e chunkenc.Encoding, b []byte) (chunkenc.Chunk, error) {
	if e == Encoding {
		return &Chunk{b: b}, nil
	}
	return p.prom.Get(e, b)
}

// Put returns a chunk for reuse; downsampled chunks are small headers left to the GC.
func (p *pool) Put(c chunkenc.Chunk) error {
	if _, ok := c.(*Chunk); ok {
		return nil
	}
	return p.prom.Put(c)
}
