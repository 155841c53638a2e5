package snappy

import (
	"bytes"
	"io"
	"testing"

	gsnappy "github.com/golang/snappy"
	"google.golang.org/grpc/encoding"
)

func payloads() map[string][]byte {
	big := bytes.Repeat([]byte("series{job=\"a\"} chunk bytes "), 10_000) // several 64 KiB frames
	return map[string][]byte{"empty": {}, "small": []byte("hello"), "large": big}
}

func compress(t *testing.T, c encoding.Compressor, p []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := c.Compress(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decompress(t *testing.T, c encoding.Compressor, p []byte) []byte {
	t.Helper()
	r, err := c.Decompress(bytes.NewReader(p))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRegistered(t *testing.T) {
	if c := encoding.GetCompressor(Name); c == nil || c.Name() != "snappy" {
		t.Fatalf("compressor %q not registered", Name)
	}
}

func TestRoundTrip(t *testing.T) {
	c := encoding.GetCompressor(Name)
	for name, p := range payloads() {
		t.Run(name, func(t *testing.T) {
			// Twice, so pooled writers and readers are reused.
			for range 2 {
				if got := decompress(t, c, compress(t, c, p)); !bytes.Equal(got, p) {
					t.Fatalf("round trip changed %d bytes into %d", len(p), len(got))
				}
			}
		})
	}
}

// The framing format is what matters on the wire: check both directions against the
// reference implementation's stream writer and reader.
func TestFramingFormatCompatible(t *testing.T) {
	c := encoding.GetCompressor(Name)
	for name, p := range payloads() {
		t.Run(name, func(t *testing.T) {
			var ref bytes.Buffer
			w := gsnappy.NewBufferedWriter(&ref)
			if _, err := w.Write(p); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := decompress(t, c, ref.Bytes()); !bytes.Equal(got, p) {
				t.Errorf("reading the reference framing: got %d bytes, want %d", len(got), len(p))
			}

			got, err := io.ReadAll(gsnappy.NewReader(bytes.NewReader(compress(t, c, p))))
			if err != nil {
				t.Fatalf("reference reader: %v", err)
			}
			if !bytes.Equal(got, p) {
				t.Errorf("reference reader: got %d bytes, want %d", len(got), len(p))
			}
		})
	}
}
