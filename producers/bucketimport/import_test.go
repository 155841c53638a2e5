package bucketimport_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/producers/bucketimport"
	"github.com/blockflow/blockflow/schemas"
)

// TestImport adopts a Thanos-layout bucket into the real JetStream catalogue: complete
// blocks are catalogued (marked ones as marked), partial uploads are skipped, records the
// catalogue already has are left alone, and a second run imports nothing.
func TestImport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := bus.Connect(ctx, bus.Config{URL: srv.ClientURL()}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	bkt, err := objstore.NewFilesystem(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}

	metas, err := synth.WriteBlocks(ctx, filepath.Join(dir, "blocks"), synth.Spec{Series: 10, Span: 8 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	upload := func(i int, withFiles bool) block.Meta {
		blockDir := filepath.Join(dir, "blocks", metas[i].ULID.String())
		m, err := block.ReadMetaFile(blockDir)
		if err != nil {
			t.Fatal(err)
		}
		m.Thanos.Labels = map[string]string{"cluster": "old"}
		m.Thanos.Source = block.SourceSidecar
		files, err := block.GatherFiles(blockDir, false)
		if err != nil {
			t.Fatal(err)
		}
		m.Thanos.Files = files
		if m, err = block.Upload(ctx, bkt, blockDir, m); err != nil {
			t.Fatal(err)
		}
		if !withFiles { // as Thanos before v0.17 wrote it
			m.Thanos.Files = nil
			data, _ := m.Encode()
			if err := bkt.Upload(ctx, m.ULID.String()+"/meta.json", bytes.NewReader(data), int64(len(data))); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	live := upload(0, false)
	marked := upload(1, true)
	known := upload(2, true)
	markTime := time.Unix(1_700_000_000, 0)
	if _, err := block.MarkForDeletion(ctx, bkt, marked.ULID, "test", markTime); err != nil {
		t.Fatal(err)
	}
	partial := metas[3].ULID // chunks only: an upload that never committed
	if err := bkt.Upload(ctx, partial.String()+"/chunks/000001", bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
	cat := b.Catalogue()
	existing := known.Record(schemas.StateLive)
	existing.Site = "kept"
	if err := cat.Put(ctx, existing); err != nil {
		t.Fatal(err)
	}

	res, err := bucketimport.Run(ctx, bkt, cat, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if want := (bucketimport.Result{Blocks: 3, Imported: 2, Known: 1, Partial: 1}); res != want {
		t.Fatalf("result %+v, want %+v", res, want)
	}
	rec, _, err := cat.Get(ctx, live.ULID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != schemas.StateLive || rec.Labels["cluster"] != "old" || rec.Site != "" ||
		rec.FileSize("index") <= 0 || rec.FileSize("chunks/000001") <= 0 {
		t.Errorf("imported record %+v: want live, labels, no site, and file sizes found in the bucket", rec)
	}
	rec, _, err = cat.Get(ctx, marked.ULID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.State != schemas.StateMarked || rec.MarkedTime != markTime.UnixMilli() {
		t.Errorf("marked block's record %+v: want marked at %v", rec, markTime)
	}
	if rec, _, err = cat.Get(ctx, known.ULID); err != nil || rec.Site != "kept" {
		t.Errorf("a known record was overwritten: %+v, %v", rec, err)
	}
	if _, _, err := cat.Get(ctx, partial); err == nil {
		t.Error("the partial upload was catalogued")
	}

	again, err := bucketimport.Run(ctx, bkt, cat, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if again.Imported != 0 || again.Known != 3 {
		t.Errorf("second run %+v, want nothing imported and 3 known", again)
	}
}
