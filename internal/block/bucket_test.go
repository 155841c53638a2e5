package block_test

import (
	"bytes"
	"context"
	"io"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/objstore"
)

// recordingBucket is a real filesystem bucket that remembers the order of writes and deletes.
type recordingBucket struct {
	objstore.Bucket
	mu  sync.Mutex
	ops []string
}

func (b *recordingBucket) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	b.record("upload " + name)
	return b.Bucket.Upload(ctx, name, r, size)
}

func (b *recordingBucket) Delete(ctx context.Context, name string) error {
	b.record("delete " + name)
	return b.Bucket.Delete(ctx, name)
}

func (b *recordingBucket) record(op string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ops = append(b.ops, op)
}

func (b *recordingBucket) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ops := b.ops
	b.ops = nil
	return ops
}

func newBucket(t *testing.T) *recordingBucket {
	t.Helper()
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	return &recordingBucket{Bucket: bkt}
}

// uploadTestBlock writes a real block and uploads it with the Thanos section filled in.
func uploadTestBlock(t *testing.T, bkt objstore.Bucket) (block.Meta, string) {
	t.Helper()
	dir := blocktest.Write(t, t.TempDir(), blocktest.Spec{Series: 50})
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Thanos.Files, err = block.GatherFiles(dir, true); err != nil {
		t.Fatal(err)
	}
	meta.Thanos.Labels = map[string]string{"cluster": "eu-1"}
	meta.Thanos.Source = block.SourceSidecar
	meta.Thanos.SegmentFiles = block.SegmentFiles(meta.Thanos.Files)
	written, err := block.Upload(context.Background(), bkt, dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	return written, dir
}

func TestUploadWritesMetaLast(t *testing.T) {
	ctx := context.Background()
	bkt := newBucket(t)
	before := time.Now()
	written, _ := uploadTestBlock(t, bkt)
	id := written.ULID.String()

	want := []string{"upload " + id + "/chunks/000001", "upload " + id + "/index", "upload " + id + "/meta.json"}
	if got := bkt.take(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("upload order:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got, err := block.ReadMeta(ctx, bkt, written.ULID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Thanos.UploadTime == nil || got.Thanos.UploadTime.Before(before.Add(-time.Second)) {
		t.Errorf("upload_time %v", got.Thanos.UploadTime)
	}
	if got.Thanos.Labels["cluster"] != "eu-1" || len(got.Thanos.Files) != 3 || got.Thanos.Source != block.SourceSidecar {
		t.Errorf("thanos section %+v", got.Thanos)
	}
	for _, f := range got.Thanos.Files {
		if f.RelPath == block.MetaFilename {
			continue
		}
		size, err := bkt.Size(ctx, path.Join(id, f.RelPath))
		if err != nil || size != f.SizeBytes {
			t.Errorf("%s: bucket size %d (%v), meta says %d", f.RelPath, size, err, f.SizeBytes)
		}
	}
}

func TestUploadRejects(t *testing.T) {
	dir := blocktest.Write(t, t.TempDir(), blocktest.Spec{})
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	meta.Thanos.Files, _ = block.GatherFiles(dir, false)
	noLabels := meta
	badVersion := meta
	badVersion.Thanos.Labels = map[string]string{"a": "b"}
	badVersion.Version = 2
	for name, m := range map[string]block.Meta{"no labels": noLabels, "meta version 2": badVersion} {
		t.Run(name, func(t *testing.T) {
			bkt := newBucket(t)
			if _, err := block.Upload(context.Background(), bkt, dir, m); err == nil {
				t.Fatal("upload succeeded")
			}
			if ops := bkt.take(); len(ops) != 0 {
				t.Errorf("wrote %v before rejecting", ops)
			}
		})
	}
}

func TestDeleteOrder(t *testing.T) {
	ctx := context.Background()
	bkt := newBucket(t)
	written, _ := uploadTestBlock(t, bkt)
	id := written.ULID
	now := time.Unix(1_700_000_000, 0)
	if _, err := block.MarkForDeletion(ctx, bkt, id, "test", now); err != nil {
		t.Fatal(err)
	}
	if err := block.MarkNoCompact(ctx, bkt, id, block.NoCompactManual, "", now); err != nil {
		t.Fatal(err)
	}
	// Unknown files go with the block.
	if err := bkt.Upload(ctx, id.String()+"/extra/debug.txt", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	// Another block must stay.
	other, _ := uploadTestBlock(t, bkt)
	bkt.take()

	if err := block.Delete(ctx, bkt, id); err != nil {
		t.Fatal(err)
	}
	ops := bkt.take()
	if len(ops) < 3 || ops[0] != "delete "+id.String()+"/meta.json" || ops[len(ops)-1] != "delete "+id.String()+"/deletion-mark.json" {
		t.Fatalf("delete order %v: want meta.json first, deletion-mark.json last", ops)
	}
	for _, want := range []string{"chunks/000001", "index", "no-compact-mark.json", "extra/debug.txt"} {
		found := false
		for _, op := range ops {
			found = found || op == "delete "+id.String()+"/"+want
		}
		if !found {
			t.Errorf("%s not deleted: %v", want, ops)
		}
	}
	var left []string
	if err := bkt.Iter(ctx, id.String()+"/", true, func(name string) error { left = append(left, name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left in the bucket: %v", left)
	}
	if ok, err := bkt.Exists(ctx, other.ULID.String()+"/meta.json"); err != nil || !ok {
		t.Errorf("other block's meta.json gone: %v %v", ok, err)
	}
	// Deleting again (a retried job) is fine.
	if err := block.Delete(ctx, bkt, id); err != nil {
		t.Errorf("second delete: %v", err)
	}
}

func TestMarksIdempotent(t *testing.T) {
	ctx := context.Background()
	id := ulid.MustParse("01JCZ8W4Q6ZB8T3M3K8R2Y7E5N")
	first, second := time.Unix(1_700_000_000, 0), time.Unix(1_700_009_999, 0)

	readMark := func(t *testing.T, bkt objstore.Bucket, name string) []byte {
		t.Helper()
		rc, err := bkt.Get(ctx, path.Join(id.String(), name))
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

	for _, tc := range []struct {
		name string
		file string
		mark func(bkt objstore.Bucket, now time.Time) error
		want string // in the mark written at "first"
	}{
		{"deletion", block.DeletionMarkFilename, func(bkt objstore.Bucket, now time.Time) error {
			_, err := block.MarkForDeletion(ctx, bkt, id, "compacted", now)
			return err
		}, `"deletion_time": 1700000000`},
		{"no-compact", block.NoCompactMarkFilename, func(bkt objstore.Bucket, now time.Time) error {
			return block.MarkNoCompact(ctx, bkt, id, block.NoCompactOutOfOrderChunk, "chunk out of order", now)
		}, `"reason": "block-index-out-of-order-chunk"`},
		{"no-downsample", block.NoDownsampleMarkFilename, func(bkt objstore.Bucket, now time.Time) error {
			return block.MarkNoDownsample(ctx, bkt, id, "manual", "", now)
		}, `"no_downsample_time": 1700000000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt := newBucket(t)
			if err := tc.mark(bkt, first); err != nil {
				t.Fatal(err)
			}
			before := readMark(t, bkt, tc.file)
			if !bytes.Contains(before, []byte(tc.want)) || !bytes.Contains(before, []byte(`"version": 1`)) ||
				!bytes.Contains(before, []byte(`"id": "`+id.String()+`"`)) {
				t.Errorf("mark:\n%s\nwant it to contain %s", before, tc.want)
			}
			if err := tc.mark(bkt, second); err != nil {
				t.Fatal(err)
			}
			if after := readMark(t, bkt, tc.file); !bytes.Equal(before, after) {
				t.Errorf("second mark changed the file:\n%s\n->\n%s", before, after)
			}
			if n := len(bkt.take()); n != 1 {
				t.Errorf("%d writes, want 1", n)
			}
		})
	}

	t.Run("deletion mark returns the existing one", func(t *testing.T) {
		bkt := newBucket(t)
		m1, err := block.MarkForDeletion(ctx, bkt, id, "a", first)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := block.MarkForDeletion(ctx, bkt, id, "b", second)
		if err != nil {
			t.Fatal(err)
		}
		if m2 != m1 || m2.DeletionTime != first.Unix() {
			t.Errorf("second call returned %+v, want %+v", m2, m1)
		}
	})

	t.Run("partial deletion mark is replaced", func(t *testing.T) {
		bkt := newBucket(t)
		name := path.Join(id.String(), block.DeletionMarkFilename)
		if err := bkt.Upload(ctx, name, strings.NewReader(`{"id": "01JC`), -1); err != nil {
			t.Fatal(err)
		}
		m, err := block.MarkForDeletion(ctx, bkt, id, "a", second)
		if err != nil {
			t.Fatal(err)
		}
		if m.DeletionTime != second.Unix() || !bytes.Contains(readMark(t, bkt, block.DeletionMarkFilename), []byte(`"deletion_time": 1700009999`)) {
			t.Errorf("partial mark not replaced: %+v", m)
		}
	})
}
