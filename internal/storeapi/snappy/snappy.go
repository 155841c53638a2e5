// Package snappy registers the gRPC compressor "snappy" that Thanos components use when
// `--grpc-compression=snappy` is set: the snappy framing (stream) format, not the block
// format. Importing the package registers it, as gRPC requires compressors to be registered
// at init time.
package snappy

import (
	"io"
	"sync"

	"github.com/klauspost/compress/snappy"
	"google.golang.org/grpc/encoding"
)

// Name is the compressor name on the wire (grpc-encoding header) and for grpc.UseCompressor.
const Name = "snappy"

func init() {
	encoding.RegisterCompressor(newCompressor())
}

// compressor pools framed-snappy writers and readers: both hold buffers of a block's size
// (64 KiB) that would otherwise be allocated per message.
type compressor struct {
	writers sync.Pool
	readers sync.Pool
}

func newCompressor() *compressor {
	c := &compressor{}
	c.writers.New = func() any { return snappy.NewBufferedWriter(nil) }
	c.readers.New = func() any { return snappy.NewReader(nil) }
	return c
}

func (c *compressor) Name() string { return Name }

func (c *compressor) Compress(w io.Writer) (io.WriteCloser, error) {
	sw := c.writers.Get().(*snappy.Writer)
	sw.Reset(w)
	return &writer{Writer: sw, pool: &c.writers}, nil
}

func (c *compressor) Decompress(r io.Reader) (io.Reader, error) {
	sr := c.readers.Get().(*snappy.Reader)
	sr.Reset(r)
	return &reader{Reader: sr, pool: &c.readers}, nil
}

// writer returns its snappy writer to the pool once Close has flushed the last frame.
type writer struct {
	*snappy.Writer
	pool *sync.Pool
}

func (w *writer) Close() error {
	err := w.Writer.Close()
	w.Writer.Reset(nil) // drop the reference to the message buffer
	w.pool.Put(w.Writer)
	return err
}

// reader returns its snappy reader to the pool at the end of the stream. gRPC reads every
// message to EOF, so the reader is not used after that.
type reader struct {
	*snappy.Reader
	pool *sync.Pool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.Reader == nil {
		return 0, io.EOF
	}
	n, err := r.Reader.Read(p)
	if err == io.EOF {
		r.Reader.Reset(nil)
		r.pool.Put(r.Reader)
		r.Reader = nil
	}
	return n, err
}
