package objstore_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
)

// testS3Outage takes MinIO away: operations must fail by their context's deadline rather
// than hang, and work again, on the same data, once MinIO is back.
func testS3Outage(t *testing.T, m *testenv.MinIO) {
	bkt := openYAML(t, m.CreateBucket(t, "outage"))
	upload(t, bkt, "before/obj", "survives")

	m.Kill(t)
	for _, tc := range []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"get", func(ctx context.Context) error { _, err := bkt.Get(ctx, "before/obj"); return err }},
		{"exists", func(ctx context.Context) error { _, err := bkt.Exists(ctx, "before/obj"); return err }},
		{"upload", func(ctx context.Context) error {
			return bkt.Upload(ctx, "during/obj", strings.NewReader("x"), 1)
		}},
		{"iter", func(ctx context.Context) error {
			return bkt.Iter(ctx, "", true, func(string) error { return nil })
		}},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		start := time.Now()
		err := tc.op(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s with MinIO down: no error", tc.name)
		}
		// Generous: this catches a hang, not slowness.
		if elapsed := time.Since(start); elapsed > 30*time.Second {
			t.Fatalf("%s with MinIO down returned after %v, far past its 1s deadline", tc.name, elapsed)
		}
		if objstore.IsNotFound(err) {
			t.Fatalf("%s with MinIO down: %v, which claims the object is missing", tc.name, err)
		}
	}

	m.Restart(t)
	if got := get(t, bkt, "before/obj"); got != "survives" {
		t.Fatalf("after restart: %q", got)
	}
	upload(t, bkt, "after/obj", "x")
}

// BenchmarkS3Upload compares our Upload with a plain minio-go PutObject of the same bytes
// to the same MinIO: the objstore layers should cost nothing measurable.
func BenchmarkS3Upload(b *testing.B) {
	m := testenv.StartMinIO(b)
	payload := bytes.Repeat([]byte("blockflow chunk data "), (64<<20)/21+1)[:64<<20]

	s3, err := objstore.NewS3(b.Context(), m.S3Config(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	raw, err := minio.New(m.Endpoint, &minio.Options{
		Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name   string
		upload func(ctx context.Context) error
	}{
		{"minio-go", func(ctx context.Context) error {
			_, err := raw.PutObject(ctx, m.Bucket, "bench/raw", bytes.NewReader(payload), int64(len(payload)), minio.PutObjectOptions{})
			return err
		}},
		{"objstore", func(ctx context.Context) error {
			return s3.Upload(ctx, "bench/objstore", bytes.NewReader(payload), int64(len(payload)))
		}},
		{"objstore-instrumented", func() func(ctx context.Context) error {
			inst := objstore.Instrument(s3, prometheus.NewRegistry())
			return func(ctx context.Context) error {
				return inst.Upload(ctx, "bench/instrumented", bytes.NewReader(payload), int64(len(payload)))
			}
		}()},
		{"objstore-unknown-size", func(ctx context.Context) error {
			return s3.Upload(ctx, "bench/unknown", struct{ io.Reader }{bytes.NewReader(payload)}, -1)
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if err := bc.upload(b.Context()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
