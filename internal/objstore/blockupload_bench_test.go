package objstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
	uploadworker "github.com/blockflow/blockflow/workers/upload"
)

// BenchmarkBlockUploadS3 puts one real 2h block of 10k series into a real MinIO three ways:
// a raw minio-go PutObject of each file (the ceiling), block.Upload through our S3 bucket
// (the Thanos layout and order), and the whole upload worker (staging download, sha256 and
// index verification, bucket write, catalogue, event). MB/s is over the block's bytes.
func BenchmarkBlockUploadS3(b *testing.B) {
	ctx := context.Background()
	m := testenv.StartMinIO(b)
	blocksDir := b.TempDir()
	metas, err := synth.WriteBlocks(ctx, blocksDir, synth.Spec{Series: 10_000})
	if err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(blocksDir, metas[0].ULID.String())
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		b.Fatal(err)
	}
	meta.Thanos.Labels = map[string]string{"cluster": "bench"}
	if meta.Thanos.Files, err = block.GatherFiles(dir, false); err != nil {
		b.Fatal(err)
	}
	var size int64
	for _, f := range meta.Thanos.Files {
		size += f.SizeBytes
	}

	s3, err := objstore.NewS3(ctx, m.S3Config(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	raw, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, "")})
	if err != nil {
		b.Fatal(err)
	}

	b.Run("minio-go-PutObject", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			for _, f := range meta.Thanos.Files {
				fh, err := os.Open(filepath.Join(dir, f.RelPath))
				if err != nil {
					b.Fatal(err)
				}
				fi, _ := fh.Stat()
				_, err = raw.PutObject(ctx, m.Bucket, "raw/"+f.RelPath, fh, fi.Size(), minio.PutObjectOptions{})
				fh.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("block.Upload", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := block.Upload(ctx, s3, dir, meta); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("upload-worker", func(b *testing.B) {
		staging := stagetest.NewStaging()
		sh := &ship.Shipper{Staging: staging, Publisher: &stagetest.Publisher{}, Site: "bench",
			Labels: meta.Thanos.Labels, Producer: schemas.ProducerSidecar}
		ev, err := sh.Ship(ctx, ship.Local{Dir: dir, Meta: meta})
		if err != nil {
			b.Fatal(err)
		}
		staged := staging.Snapshot()
		w := &uploadworker.Worker{Bucket: s3, Staging: staging, Catalogue: &stagetest.Catalogue{}, Publisher: &stagetest.Publisher{},
			DataDir: b.TempDir(), Logger: zerolog.Nop(), Metrics: uploadworker.NewMetrics(prometheus.NewRegistry())}
		b.SetBytes(ship.Size(ev))
		for b.Loop() {
			b.StopTimer()
			staging.Restore(staged)
			if err := block.Delete(ctx, s3, ev.ULID); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := w.Handle(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}
