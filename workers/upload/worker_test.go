package upload_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/internal/stagetest"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/upload"
)

// The bus runs the worker as a stage.Handler.
var _ stage.Handler[schemas.BlockReady] = (&upload.Worker{}).Handle

var testLabels = map[string]string{"cluster": "eu-1", "replica": "a"}

const testSite = "eu-1"

type env struct {
	bkt       objstore.Bucket
	staging   *stagetest.Staging
	pub       *stagetest.Publisher
	cat       *stagetest.Catalogue
	reg       *prometheus.Registry
	worker    *upload.Worker
	dataDir   string
	blocksDir string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	e := &env{
		bkt:       bkt,
		staging:   stagetest.NewStaging(),
		pub:       &stagetest.Publisher{},
		cat:       &stagetest.Catalogue{},
		reg:       prometheus.NewRegistry(),
		dataDir:   t.TempDir(),
		blocksDir: t.TempDir(),
	}
	e.worker = &upload.Worker{
		Bucket:    bkt,
		Staging:   e.staging,
		Catalogue: e.cat,
		Publisher: e.pub,
		DataDir:   e.dataDir,
		Logger:    zerolog.Nop(),
		Metrics:   upload.NewMetrics(e.reg),
	}
	return e
}

// stage writes nothing itself: it ships the block in dir the way a producer does and
// returns the block.ready event.
func (e *env) stage(t testing.TB, dir, producer string) schemas.BlockReady {
	t.Helper()
	m, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &ship.Shipper{Staging: e.staging, Publisher: e.pub, Site: testSite, Labels: testLabels, Producer: producer}
	ev, err := s.Ship(context.Background(), ship.Local{Dir: dir, Meta: m})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// metric returns the value of a counter on the worker's registry, picked by name and,
// when given, the value of its result label.
func (e *env) metric(t testing.TB, name, result string) float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if result == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == result) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not found", name, result)
	return 0
}

func (e *env) count(t testing.TB, result string) float64 {
	return e.metric(t, "blockflow_upload_blocks_total", result)
}

func TestUploadGoodBlock(t *testing.T) {
	for _, tc := range []struct {
		producer, source string
	}{
		{schemas.ProducerSidecar, block.SourceSidecar},
		{schemas.ProducerBackfill, block.SourceBucketUpload},
	} {
		t.Run(tc.producer, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			dir := blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 100})
			ev := e.stage(t, dir, tc.producer)

			if err := e.worker.Handle(ctx, ev); err != nil {
				t.Fatal(err)
			}
			id := ev.ULID.String()

			// The Thanos layout, with the same bytes as the local block.
			for _, rel := range []string{"chunks/000001", "index"} {
				want, err := os.ReadFile(filepath.Join(dir, rel))
				if err != nil {
					t.Fatal(err)
				}
				if got := readObject(t, e.bkt, id+"/"+rel); string(got) != string(want) {
					t.Errorf("%s differs in the bucket", rel)
				}
			}
			meta, err := block.ReadMeta(ctx, e.bkt, ev.ULID)
			if err != nil {
				t.Fatal(err)
			}
			th := meta.Thanos
			switch {
			case th.Labels["cluster"] != "eu-1" || th.Labels["replica"] != "a" || len(th.Labels) != 2:
				t.Errorf("labels %v", th.Labels)
			case th.Source != tc.source || th.Downsample.Resolution != 0:
				t.Errorf("source %q resolution %d", th.Source, th.Downsample.Resolution)
			case th.UploadTime == nil:
				t.Error("no upload_time")
			case strings.Join(th.SegmentFiles, ",") != "000001":
				t.Errorf("segment_files %v", th.SegmentFiles)
			case len(th.Files) != 3 || th.Files[2].RelPath != block.MetaFilename || th.Files[2].SizeBytes != 0:
				t.Errorf("files %+v", th.Files)
			}
			for _, f := range th.Files[:2] {
				local, _ := os.Stat(filepath.Join(dir, f.RelPath))
				sum, _ := block.SHA256File(filepath.Join(dir, f.RelPath))
				if f.SizeBytes != local.Size() || f.Hash == nil || f.Hash.Value != sum {
					t.Errorf("%s: %+v, want size %d hash %s", f.RelPath, f, local.Size(), sum)
				}
			}
			if meta.Stats.NumSeries != 100 || meta.Compaction.Level != 1 {
				t.Errorf("prometheus part changed: %+v", meta.BlockMeta)
			}

			rec, _, err := e.cat.Get(ctx, ev.ULID)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State != schemas.StateLive || rec.Site != testSite || rec.Source != tc.source || rec.NumSeries != 100 ||
				rec.FileSize("index") != th.Files[1].SizeBytes || rec.UploadTime != th.UploadTime.UnixMilli() {
				t.Errorf("catalogue record %+v", rec)
			}

			ups := e.pub.Events(schemas.EventUploaded)
			if len(ups) != 1 || ups[0].Site != testSite || ups[0].ULID != ev.ULID {
				t.Fatalf("uploaded events %+v", ups)
			}
			up, err := stagetest.Decode[schemas.BlockUploaded](ups[0])
			if err != nil {
				t.Fatal(err)
			}
			if up.Record.ULID != rec.ULID || up.Record.State != schemas.StateLive || up.Record.Site != testSite {
				t.Errorf("uploaded event %+v", up)
			}

			if names := e.staging.Names(); len(names) != 0 {
				t.Errorf("staging not emptied: %v", names)
			}
			if entries, _ := os.ReadDir(filepath.Join(e.dataDir, "upload")); len(entries) != 0 {
				t.Errorf("work dir left: %v", entries)
			}
			if n, b := e.count(t, "uploaded"), e.metric(t, "blockflow_upload_bytes_total", ""); n != 1 || b != float64(ship.Size(ev)) {
				t.Errorf("metrics: uploaded %v bytes %v", n, b)
			}
		})
	}
}

func TestUploadIdempotent(t *testing.T) {
	ctx := context.Background()

	t.Run("same event after success", func(t *testing.T) {
		e := newEnv(t)
		ev := e.stage(t, blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 10}), schemas.ProducerSidecar)
		if err := e.worker.Handle(ctx, ev); err != nil {
			t.Fatal(err)
		}
		before := readObject(t, e.bkt, ev.ULID.String()+"/meta.json")
		if err := e.worker.Handle(ctx, ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		if after := readObject(t, e.bkt, ev.ULID.String()+"/meta.json"); string(after) != string(before) {
			t.Error("meta.json rewritten by the redelivery")
		}
		if blocks := listRoot(t, e.bkt); len(blocks) != 1 {
			t.Errorf("bucket has %v, want one block", blocks)
		}
		if e.cat.Len() != 1 {
			t.Errorf("catalogue has %d records", e.cat.Len())
		}
		// The bus drops the second announcement: same Nats-Msg-Id.
		ups := e.pub.Events(schemas.EventUploaded)
		if len(ups) != 2 || ups[0].MsgID != ups[1].MsgID {
			t.Errorf("uploaded events %+v", ups)
		}
		if e.count(t, "duplicate") != 1 {
			t.Errorf("duplicate count %v", e.count(t, "duplicate"))
		}
	})

	t.Run("crash after commit, before the catalogue", func(t *testing.T) {
		e := newEnv(t)
		ev := e.stage(t, blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 10}), schemas.ProducerSidecar)
		e.cat.FailPut = func(schemas.BlockRecord) error { return errors.New("kv unavailable") }
		err := e.worker.Handle(ctx, ev)
		if err == nil || stage.IsPermanent(err) {
			t.Fatalf("catalogue failure: got %v, want a retryable error", err)
		}
		if ok, _ := e.bkt.Exists(ctx, ev.ULID.String()+"/meta.json"); !ok {
			t.Fatal("block not committed before the catalogue write")
		}
		if len(e.staging.Names()) == 0 {
			t.Fatal("staged files deleted before the block was recorded")
		}
		e.cat.FailPut = nil
		if err := e.worker.Handle(ctx, ev); err != nil {
			t.Fatalf("redelivery: %v", err)
		}
		rec, _, err := e.cat.Get(ctx, ev.ULID)
		if err != nil || rec.State != schemas.StateLive || rec.Site != testSite || rec.Source != block.SourceSidecar {
			t.Errorf("record %+v, %v", rec, err)
		}
		if n := len(e.pub.Events(schemas.EventUploaded)); n != 1 {
			t.Errorf("%d uploaded events", n)
		}
		if names := e.staging.Names(); len(names) != 0 {
			t.Errorf("staging not emptied: %v", names)
		}
	})

	t.Run("existing record is kept", func(t *testing.T) {
		e := newEnv(t)
		ev := e.stage(t, blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 10}), schemas.ProducerSidecar)
		if err := e.worker.Handle(ctx, ev); err != nil {
			t.Fatal(err)
		}
		// A planner marked it meanwhile; the redelivery must not revive it.
		rec, _, _ := e.cat.Get(ctx, ev.ULID)
		rec.State = schemas.StateMarked
		if err := e.cat.Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := e.worker.Handle(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := e.cat.Get(ctx, ev.ULID); got.State != schemas.StateMarked {
			t.Errorf("state %q after redelivery, want marked", got.State)
		}
	})
}

func TestUploadRejectsBadBlocks(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// corrupt breaks the local block before it is staged, or the event or staging after.
		corruptBlock func(t *testing.T, dir string)
		corruptEvent func(e *env, ev *schemas.BlockReady)
		want         string
	}{
		{
			name:         "truncated index",
			corruptBlock: func(t *testing.T, dir string) { truncateBy(t, dir, "index", 100) },
			want:         "index",
		},
		{
			name:         "index cut to its header",
			corruptBlock: func(t *testing.T, dir string) { blocktest.Truncate(t, dir, "index", 5) },
			want:         "index",
		},
		{
			name:         "truncated chunk segment",
			corruptBlock: func(t *testing.T, dir string) { truncateBy(t, dir, "chunks/000001", 1000) },
			want:         "chunks/000001",
		},
		{
			name:         "chunk segment cut to its header",
			corruptBlock: func(t *testing.T, dir string) { blocktest.Truncate(t, dir, "chunks/000001", 8) },
			want:         "chunk",
		},
		{
			name: "flipped bit in a chunk",
			corruptBlock: func(t *testing.T, dir string) {
				name := filepath.Join(dir, "chunks", "000001")
				data, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				data[len(data)/2] ^= 0x10
				if err := os.WriteFile(name, data, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: "checksum",
		},
		{
			name: "chunk outside the block's time range",
			corruptBlock: func(t *testing.T, dir string) {
				blocktest.EditMeta(t, dir, func(m *block.Meta) { m.MaxTime = m.MinTime + 1000 })
			},
			corruptEvent: func(e *env, ev *schemas.BlockReady) {},
			want:         "outside block",
		},
		{
			name: "hash mismatch",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.Files[0].SHA256 = strings.Repeat("0", 64)
			},
			want: "sha256",
		},
		{
			name: "size mismatch",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.Files[1].Size++
			},
			want: "bytes",
		},
		{
			name: "missing staged file",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				_ = e.staging.Delete(ctx, schemas.StagedName(ev.Site, ev.ULID, "index"))
			},
			want: "staged file " + testSite,
		},
		{
			name: "time range differs from meta.json",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.MaxTime++
			},
			want: "time range",
		},
		{
			name: "file outside the block",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.Files = append(ev.Files, schemas.File{RelPath: "../../escape", SHA256: "x"})
			},
			want: "unexpected file",
		},
		{
			name: "unknown producer",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.Producer = "receive"
			},
			want: "producer",
		},
		{
			name: "no labels",
			corruptEvent: func(e *env, ev *schemas.BlockReady) {
				ev.Labels = nil
			},
			want: "labels",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			dir := blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 200})
			if tc.corruptBlock != nil {
				tc.corruptBlock(t, dir)
			}
			ev := e.stage(t, dir, schemas.ProducerSidecar)
			if tc.corruptEvent != nil {
				tc.corruptEvent(e, &ev)
			}
			err := e.worker.Handle(ctx, ev)
			if !stage.IsPermanent(err) {
				t.Fatalf("got %v, want a permanent error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, ev.ULID.String()) || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q should name the block and contain %q", msg, tc.want)
			}
			t.Log(msg)
			if ok, _ := e.bkt.Exists(ctx, ev.ULID.String()+"/meta.json"); ok {
				t.Error("a bad block was committed")
			}
			if e.cat.Len() != 0 || len(e.pub.Events(schemas.EventUploaded)) != 0 {
				t.Error("a bad block was recorded or announced")
			}
			if e.count(t, "invalid") != 1 {
				t.Errorf("invalid count %v", e.count(t, "invalid"))
			}
		})
	}
}

func TestUploadTransientErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		breakIt func(e *env)
	}{
		{"staging unreachable", func(e *env) {
			e.staging.FailGet = func(string) error { return errors.New("connection reset") }
		}},
		{"publish fails", func(e *env) {
			e.pub.Fail = func(kind string, _ ulid.ULID) error {
				if kind == schemas.EventUploaded {
					return errors.New("no responders")
				}
				return nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ev := e.stage(t, blocktest.Write(t, e.blocksDir, blocktest.Spec{Series: 10}), schemas.ProducerSidecar)
			tc.breakIt(e)
			err := e.worker.Handle(ctx, ev)
			if err == nil || stage.IsPermanent(err) {
				t.Fatalf("got %v, want a retryable error", err)
			}
			if e.count(t, "error") != 1 {
				t.Errorf("error count %v", e.count(t, "error"))
			}
			// Fixed, the retry completes.
			e.staging.FailGet, e.pub.Fail = nil, nil
			if err := e.worker.Handle(ctx, ev); err != nil {
				t.Fatalf("retry: %v", err)
			}
			if rec, _, err := e.cat.Get(ctx, ev.ULID); err != nil || rec.State != schemas.StateLive {
				t.Errorf("record %+v %v", rec, err)
			}
			if names := e.staging.Names(); len(names) != 0 {
				t.Errorf("staging not emptied: %v", names)
			}
		})
	}
}

func truncateBy(t *testing.T, dir, rel string, n int64) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= n {
		t.Fatalf("%s has only %d bytes", rel, fi.Size())
	}
	blocktest.Truncate(t, dir, rel, fi.Size()-n)
}

func readObject(t testing.TB, bkt objstore.Bucket, name string) []byte {
	t.Helper()
	rc, err := bkt.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func listRoot(t testing.TB, bkt objstore.Bucket) []string {
	t.Helper()
	var names []string
	if err := bkt.Iter(context.Background(), "", false, func(name string) error {
		names = append(names, path.Clean(name))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return names
}
