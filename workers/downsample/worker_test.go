package downsample

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/schemas"
)

// The bus runs the worker as a stage.Handler.
var _ stage.Handler[schemas.DownsampleJob] = (&Worker{}).Handle

type env struct {
	bkt     *failingBucket
	cat     *stagetest.Catalogue
	pub     *stagetest.Publisher
	reg     *prometheus.Registry
	worker  *Worker
	dataDir string
}

// failingBucket fails uploads while failUploads is set.
type failingBucket struct {
	objstore.Bucket
	failUploads atomic.Bool
}

func (b *failingBucket) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	if b.failUploads.Load() {
		return errors.New("injected upload failure")
	}
	return b.Bucket.Upload(ctx, name, r, size)
}

func newEnv(t testing.TB, bkt objstore.Bucket) *env {
	t.Helper()
	e := &env{
		bkt:     &failingBucket{Bucket: bkt},
		cat:     &stagetest.Catalogue{},
		pub:     &stagetest.Publisher{},
		reg:     prometheus.NewRegistry(),
		dataDir: t.TempDir(),
	}
	e.worker = &Worker{
		Bucket: e.bkt, Catalogue: e.cat, Publisher: e.pub,
		DataDir: e.dataDir, Logger: zerolog.Nop(), Metrics: NewMetrics(e.reg),
	}
	return e
}

func filesystemBucket(t testing.TB) objstore.Bucket {
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	return bkt
}

func minioBucket(t testing.TB) objstore.Bucket {
	m := testenv.StartMinIO(t)
	bkt, err := objstore.NewFromYAML(context.Background(), []byte(m.ObjstoreYAML()), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	return bkt
}

// upload puts a raw 2d block of n series in the bucket as the upload stage leaves it,
// hashes included unless noHashes, and records it in the catalogue.
func (e *env) upload(t testing.TB, n int, noHashes bool) (string, schemas.BlockRecord) {
	t.Helper()
	dir, meta := rawBlock(t, n)
	files, err := block.GatherFiles(dir, !noHashes)
	if err != nil {
		t.Fatal(err)
	}
	meta.Thanos.Files, meta.Thanos.SegmentFiles = files, block.SegmentFiles(files)
	written, err := block.Upload(context.Background(), e.bkt, dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	rec := written.Record(schemas.StateLive)
	rec.Site = "eu-1"
	if err := e.cat.Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return dir, rec
}

func (e *env) records(t testing.TB, ids ...ulid.ULID) []schemas.BlockRecord {
	t.Helper()
	var out []schemas.BlockRecord
	for _, id := range ids {
		rec, _, err := e.cat.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

func (e *env) exists(t testing.TB, name string) bool {
	t.Helper()
	ok, err := e.bkt.Exists(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func (e *env) result(r string) float64 {
	return testutil.ToFloat64(e.worker.Metrics.jobs.WithLabelValues(r))
}

func TestWorker(t *testing.T) {
	for _, bc := range []struct {
		name string
		open func(testing.TB) objstore.Bucket
	}{{"filesystem", filesystemBucket}, {"minio", minioBucket}} {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, bc.open(t))
			_, in := e.upload(t, 4, false)

			jobs := Plan(e.records(t, in.ULID))
			if len(jobs) != 1 || jobs[0].Resolution != schemas.Res5m || jobs[0].Input.ULID != in.ULID {
				t.Fatalf("plan: %+v", jobs)
			}
			job := jobs[0]
			if err := e.worker.Handle(ctx, job); err != nil {
				t.Fatal(err)
			}

			out := schemas.DownsampleOutputULID(in.ULID, schemas.Res5m)
			meta, err := block.ReadMeta(ctx, e.bkt, out)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case meta.Thanos.Downsample.Resolution != schemas.Res5m || meta.Thanos.Source != block.SourceCompactor:
				t.Errorf("thanos section %+v", meta.Thanos)
			case meta.Thanos.UploadTime == nil || !reflect.DeepEqual(meta.Thanos.Labels, externalLabels):
				t.Errorf("upload time %v, labels %v", meta.Thanos.UploadTime, meta.Thanos.Labels)
			case !reflect.DeepEqual(meta.Compaction.Sources, in.Sources) || meta.Compaction.Level != in.Level:
				t.Errorf("compaction %+v, input sources %v level %d", meta.Compaction, in.Sources, in.Level)
			}
			for _, f := range meta.Thanos.Files {
				if !e.exists(t, path.Join(out.String(), f.RelPath)) {
					t.Errorf("%s missing from the bucket", f.RelPath)
				}
			}
			if !e.exists(t, path.Join(in.ULID.String(), block.MetaFilename)) {
				t.Error("the raw block is gone")
			}
			rec, _, err := e.cat.Get(ctx, out)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != schemas.StateLive || rec.Resolution != schemas.Res5m || rec.Site != in.Site || rec.NumSamples != meta.Stats.NumSamples {
				t.Errorf("catalogue record %+v", rec)
			}
			evs := e.pub.Events(schemas.EventDownsampled)
			if len(evs) != 1 || evs[0].ULID != out || evs[0].Site != job.Group {
				t.Fatalf("events %+v", evs)
			}
			ev, err := stagetest.Decode[schemas.BlockDownsampled](evs[0])
			if err != nil || ev.Input != in.ULID || ev.Record.ULID != out {
				t.Errorf("event %+v, %v", ev, err)
			}
			if left, _ := os.ReadDir(e.dataDir); len(left) != 0 {
				t.Errorf("data dir keeps %d entries", len(left))
			}

			// The output covers the input's sources: nothing left to plan.
			if jobs := Plan(e.records(t, in.ULID, out)); len(jobs) != 0 {
				t.Errorf("planned again: %+v", jobs)
			}

			// Redelivery: the output is found and only the bookkeeping is redone; with the
			// record lost it is rebuilt from the bucket.
			e.cat = &stagetest.Catalogue{}
			e.worker.Catalogue = e.cat
			if err := e.worker.Handle(ctx, job); err != nil {
				t.Fatal(err)
			}
			again, _, err := e.cat.Get(ctx, out)
			if err != nil || again.ULID != out || again.Resolution != schemas.Res5m {
				t.Errorf("record after redelivery %+v, %v", again, err)
			}
			if evs := e.pub.Events(schemas.EventDownsampled); len(evs) != 2 || evs[1].MsgID != evs[0].MsgID {
				t.Errorf("redelivery events %+v", evs)
			}
			if e.result(resultDownsampled) != 1 || e.result(resultDuplicate) != 1 {
				t.Errorf("results: downsampled %v, duplicate %v", e.result(resultDownsampled), e.result(resultDuplicate))
			}

			// 5m to 1h. (Plan asks for it only from 10 days up; the worker does any 5m block.)
			job1h := schemas.DownsampleJob{
				Version: schemas.Version, ID: schemas.DownsampleJobID(out, schemas.Res1h),
				Group: GroupKey(again), Input: again, Resolution: schemas.Res1h,
			}
			if err := e.worker.Handle(ctx, job1h); err != nil {
				t.Fatal(err)
			}
			m1h, err := block.ReadMeta(ctx, e.bkt, schemas.DownsampleOutputULID(out, schemas.Res1h))
			if err != nil || m1h.Thanos.Downsample.Resolution != schemas.Res1h || !reflect.DeepEqual(m1h.Compaction.Sources, in.Sources) {
				t.Errorf("1h meta %+v, %v", m1h, err)
			}
		})
	}
}

// TestWorkerRejects dead-letters jobs that can never succeed. An input that cannot be read
// also gets a no-downsample mark, in the bucket and the catalogue, so it is not planned again.
func TestWorkerRejects(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// harm damages the input in the bucket or the job.
		harm   func(t *testing.T, e *env, job *schemas.DownsampleJob)
		hashes bool
		marked bool
	}{
		{
			name: "corrupt index",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) {
				zeroObject(t, e, path.Join(job.Input.ULID.String(), block.IndexFilename))
			},
			marked: true,
		},
		{
			name: "hash mismatch",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) {
				zeroObject(t, e, path.Join(job.Input.ULID.String(), "chunks/000001"))
			},
			hashes: true, marked: true,
		},
		{
			name: "unparsable meta.json",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) {
				put(t, e, path.Join(job.Input.ULID.String(), block.MetaFilename), []byte("{"))
			},
			marked: true,
		},
		{
			name: "input deleted",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) {
				if err := block.Delete(ctx, e.bkt, job.Input.ULID); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "resolution differs from the bucket",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) {
				job.Input.Resolution, job.Resolution = schemas.Res5m, schemas.Res1h
				job.ID = schemas.DownsampleJobID(job.Input.ULID, job.Resolution)
			},
		},
		{
			name: "invalid job",
			harm: func(t *testing.T, e *env, job *schemas.DownsampleJob) { job.ID = "forged" },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, filesystemBucket(t))
			_, in := e.upload(t, 2, !tc.hashes)
			job := Plan(e.records(t, in.ULID))[0]
			tc.harm(t, e, &job)

			err := e.worker.Handle(ctx, job)
			if !stage.IsPermanent(err) {
				t.Fatalf("err %v, want permanent", err)
			}
			if marked := e.exists(t, path.Join(in.ULID.String(), block.NoDownsampleMarkFilename)); marked != tc.marked {
				t.Errorf("no-downsample mark: %v, want %v", marked, tc.marked)
			}
			rec, _, _ := e.cat.Get(ctx, in.ULID)
			if (rec.NoDownsample != "") != tc.marked {
				t.Errorf("catalogue no-downsample reason %q", rec.NoDownsample)
			}
			if tc.marked && len(Plan([]schemas.BlockRecord{rec})) != 0 {
				t.Error("a marked block is planned again")
			}
			if e.exists(t, path.Join(schemas.DownsampleOutputULID(in.ULID, schemas.Res5m).String(), block.MetaFilename)) {
				t.Error("an output was committed")
			}
			if e.result(resultInvalid) != 1 || len(e.pub.Events("")) != 0 {
				t.Errorf("invalid results %v, events %d", e.result(resultInvalid), len(e.pub.Events("")))
			}
		})
	}
}

// TestWorkerRetries fails on a bucket error without marking anything, and succeeds once
// the bucket is back.
func TestWorkerRetries(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, filesystemBucket(t))
	_, in := e.upload(t, 2, false)
	job := Plan(e.records(t, in.ULID))[0]

	e.bkt.failUploads.Store(true)
	err := e.worker.Handle(ctx, job)
	if err == nil || stage.IsPermanent(err) {
		t.Fatalf("err %v, want a retryable error", err)
	}
	if e.exists(t, path.Join(in.ULID.String(), block.NoDownsampleMarkFilename)) {
		t.Error("a bucket failure marked the input")
	}
	e.bkt.failUploads.Store(false)
	if err := e.worker.Handle(ctx, job); err != nil {
		t.Fatal(err)
	}
	if e.result(resultError) != 1 || e.result(resultDownsampled) != 1 {
		t.Errorf("results: error %v, downsampled %v", e.result(resultError), e.result(resultDownsampled))
	}
}

func zeroObject(t *testing.T, e *env, name string) {
	t.Helper()
	size, err := e.bkt.Size(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	put(t, e, name, make([]byte, size))
}

func put(t *testing.T, e *env, name string, data []byte) {
	t.Helper()
	if err := e.bkt.Upload(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}
