package bucketblock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

func newBucket(t testing.TB) *blocktest.CountingBucket {
	t.Helper()
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return blocktest.NewCountingBucket(fs)
}

func newCache(t testing.TB, bkt objstore.Bucket, dir string, opts CacheOptions) *Cache {
	t.Helper()
	opts.Dir = dir
	opts.Logger = zerolog.Nop()
	c, err := NewCache(bkt, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newBlock(t testing.TB, rec schemas.BlockRecord, c *Cache) *Block {
	t.Helper()
	b, err := New(rec, c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeSegments writes chunks of many sizes (some larger than any read-ahead window)
// into small segments, and returns their metas with refs and the chunks directory.
func writeSegments(t *testing.T) ([]chunks.Meta, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "chunks")
	w, err := chunks.NewWriter(dir, chunks.WithSegmentSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var metas []chunks.Meta
	for i := range 600 {
		var chk chunkenc.Chunk
		n := 1 + rng.IntN(240)
		if i%50 == 7 {
			n = 6000 // ~50 KiB of random floats: bigger than the read-ahead window
		}
		if i%9 == 4 {
			chk = chunkenc.NewHistogramChunk()
			app, err := chk.Appender()
			if err != nil {
				t.Fatal(err)
			}
			for s := range min(n, 60) {
				if _, _, _, err := app.AppendHistogram(nil, 0, int64(s)*1000, tsdbutil.GenerateTestHistogram(int64(s)), false); err != nil {
					t.Fatal(err)
				}
			}
		} else {
			chk = chunkenc.NewXORChunk()
			app, err := chk.Appender()
			if err != nil {
				t.Fatal(err)
			}
			for s := range n {
				app.Append(0, int64(s)*1000, rng.Float64()*1e6)
			}
		}
		metas = append(metas, chunks.Meta{Chunk: chk, MinTime: 0, MaxTime: int64(n) * 1000})
	}
	for i := 0; i < len(metas); i += 10 {
		if err := w.WriteChunks(metas[i:min(i+10, len(metas))]...); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return metas, dir
}

// uploadSegments copies a chunks directory to the bucket and returns a record for it.
func uploadSegments(t *testing.T, bkt objstore.Bucket, dir string) schemas.BlockRecord {
	t.Helper()
	id := ulid.MustNew(ulid.Now(), nil)
	rec := schemas.BlockRecord{Version: schemas.Version, ULID: id, MinTime: 0, MaxTime: 1, State: schemas.StateLive}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := bkt.Upload(context.Background(), id.String()+"/chunks/"+e.Name(), bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		rec.Files = append(rec.Files, schemas.File{RelPath: "chunks/" + e.Name(), Size: int64(len(data))})
	}
	if len(entries) < 3 {
		t.Fatalf("want several segments, got %d", len(entries))
	}
	return rec
}

func TestChunkReaderMatchesPrometheus(t *testing.T) {
	metas, dir := writeSegments(t)
	want, err := chunks.NewDirReader(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	bkt := newBucket(t)
	rec := uploadSegments(t, bkt, dir)
	b := newBlock(t, rec, newCache(t, bkt, t.TempDir(), CacheOptions{ReadAhead: 16 << 10, Windows: 2}))

	// In write order (as a query reads them), then in random order.
	order := make([]int, len(metas))
	for i := range order {
		order[i] = i
	}
	shuffled := slices.Clone(order)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })

	for _, tc := range []struct {
		name  string
		order []int
	}{{"sequential", order}, {"random", shuffled}} {
		t.Run(tc.name, func(t *testing.T) {
			cr, err := b.Chunks()
			if err != nil {
				t.Fatal(err)
			}
			defer cr.Close()
			before := bkt.Calls("GetRange", "")
			for _, i := range tc.order {
				m := chunks.Meta{Ref: metas[i].Ref}
				wantChk, _, err := want.ChunkOrIterable(m)
				if err != nil {
					t.Fatal(err)
				}
				gotChk, it, err := cr.ChunkOrIterable(m)
				if err != nil {
					t.Fatalf("chunk %d (ref %d): %v", i, m.Ref, err)
				}
				if it != nil {
					t.Fatalf("chunk %d: got an iterable", i)
				}
				if gotChk.Encoding() != wantChk.Encoding() || !bytes.Equal(gotChk.Bytes(), wantChk.Bytes()) {
					t.Fatalf("chunk %d (ref %d): got %s %d bytes, want %s %d bytes", i, m.Ref, gotChk.Encoding(), len(gotChk.Bytes()), wantChk.Encoding(), len(wantChk.Bytes()))
				}
			}
			reads := bkt.Calls("GetRange", "") - before
			t.Logf("%d chunks, %d range reads", len(metas), reads)
			if tc.name == "sequential" && reads >= len(metas)/4 {
				t.Errorf("read-ahead is not working: %d range reads for %d chunks", reads, len(metas))
			}
		})
	}
}

// TestChunkReaderOnBlock reads every chunk of every series of a real block through the
// bucket and compares it with Prometheus' reader on the block's directory.
func TestChunkReaderOnBlock(t *testing.T) {
	bkt := newBucket(t)
	rec, dir := uploaded(t, bkt, 0, 2*3600_000, map[string]string{"cluster": "a"})
	want, err := chunks.NewDirReader(filepath.Join(dir, "chunks"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	b := newBlock(t, rec, newCache(t, bkt, t.TempDir(), CacheOptions{ReadAhead: 4 << 10}))
	ir, err := b.Index()
	if err != nil {
		t.Fatal(err)
	}
	defer ir.Close()
	cr, err := b.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	defer cr.Close()

	k, v := index.AllPostingsKey()
	p, err := ir.Postings(context.Background(), k, v)
	if err != nil {
		t.Fatal(err)
	}
	var (
		builder labels.ScratchBuilder
		metas   []chunks.Meta
		n       int
	)
	for p.Next() {
		if err := ir.Series(p.At(), &builder, &metas); err != nil {
			t.Fatal(err)
		}
		for _, m := range metas {
			w, _, err := want.ChunkOrIterable(m)
			if err != nil {
				t.Fatal(err)
			}
			g, _, err := cr.ChunkOrIterable(m)
			if err != nil {
				t.Fatalf("%s chunk %d: %v", builder.Labels(), m.Ref, err)
			}
			if g.Encoding() != w.Encoding() || !bytes.Equal(g.Bytes(), w.Bytes()) {
				t.Fatalf("%s chunk %d differs", builder.Labels(), m.Ref)
			}
			n++
		}
	}
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	if n < 100 {
		t.Fatalf("only %d chunks compared", n)
	}
}

func TestChunkReaderErrors(t *testing.T) {
	metas, dir := writeSegments(t)
	bkt := newBucket(t)
	rec := uploadSegments(t, bkt, dir)

	// Flip a byte inside the data of the first chunk of the first segment.
	seg := rec.ULID.String() + "/chunks/000001"
	rc, err := bkt.Get(context.Background(), seg)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, off := chunks.BlockChunkRef(metas[0].Ref).Unpack()
	data[off+4] ^= 0xFF
	if err := bkt.Upload(context.Background(), seg, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	b := newBlock(t, rec, newCache(t, bkt, t.TempDir(), CacheOptions{}))
	cr, err := b.Chunks()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ref  chunks.ChunkRef
		want string
	}{
		{"corrupt", metas[0].Ref, "checksum mismatch"},
		{"no such segment", chunks.ChunkRef(chunks.NewBlockChunkRef(99, 8)), "out of range"},
		{"offset in header", chunks.ChunkRef(chunks.NewBlockChunkRef(0, 2)), "outside segment"},
		{"offset past end", chunks.ChunkRef(chunks.NewBlockChunkRef(0, 1<<30)), "outside segment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cr.ChunkOrIterable(chunks.Meta{Ref: tc.ref})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	cr.Close()
	if _, _, err := cr.ChunkOrIterable(chunks.Meta{Ref: metas[1].Ref}); !errors.Is(err, errClosed) {
		t.Fatalf("read after close: got %v", err)
	}
}

// uploaded creates and uploads a block of float and histogram series.
func uploaded(t testing.TB, bkt objstore.Bucket, mint, maxt int64, ext map[string]string) (schemas.BlockRecord, string) {
	t.Helper()
	series := append(blocktest.FloatSeries("counter", 20, mint, maxt, 15_000), blocktest.HistogramSeries("hist", 3, mint, maxt, 60_000)...)
	dir := blocktest.Create(t, t.TempDir(), series)
	return blocktest.Upload(t, bkt, dir, ext, nil), dir
}

func TestBlockReaderMatchesLocalBlock(t *testing.T) {
	bkt := newBucket(t)
	rec, dir := uploaded(t, bkt, 0, 2*3600_000, map[string]string{"cluster": "a"})
	local, err := tsdb.OpenBlock(promslog.NewNopLogger(), dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	b := newBlock(t, rec, newCache(t, bkt, t.TempDir(), CacheOptions{}))
	if b.Meta().ULID != local.Meta().ULID || b.Meta().MinTime != local.Meta().MinTime || b.Meta().MaxTime != local.Meta().MaxTime {
		t.Fatalf("meta: got %+v, want %+v", b.Meta(), local.Meta())
	}

	ctx := context.Background()
	all := labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")
	job := labels.MustNewMatcher(labels.MatchEqual, "job", "job-1")
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		ms         []*labels.Matcher
	}{
		{"all", 0, 2 * 3600_000, []*labels.Matcher{all}},
		{"one job, middle", 1800_000, 3600_000, []*labels.Matcher{job}},
		{"regexp", 0, 2 * 3600_000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "i", "1.*"), labels.MustNewMatcher(labels.MatchNotEqual, "__name__", "hist")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := readAll(t, local, tc.mint, tc.maxt, tc.ms)
			got := readAll(t, b, tc.mint, tc.maxt, tc.ms)
			if len(got) == 0 || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("got %d series, want %d:\n%v\n%v", len(got), len(want), got, want)
			}

			wq, err := tsdb.NewBlockQuerier(local, tc.mint, tc.maxt)
			if err != nil {
				t.Fatal(err)
			}
			defer wq.Close()
			gq, err := tsdb.NewBlockQuerier(b, tc.mint, tc.maxt)
			if err != nil {
				t.Fatal(err)
			}
			defer gq.Close()
			for _, name := range []string{"i", "job", "__name__"} {
				for _, ms := range [][]*labels.Matcher{nil, tc.ms} {
					w, _, err := wq.LabelValues(ctx, name, nil, ms...)
					if err != nil {
						t.Fatal(err)
					}
					g, _, err := gq.LabelValues(ctx, name, nil, ms...)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(g, w) {
						t.Errorf("values of %s for %v: got %v, want %v", name, ms, g, w)
					}
				}
			}
			w, _, err := wq.LabelNames(ctx, nil, tc.ms...)
			if err != nil {
				t.Fatal(err)
			}
			g, _, err := gq.LabelNames(ctx, nil, tc.ms...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(g, w) {
				t.Errorf("label names: got %v, want %v", g, w)
			}
		})
	}
}

// readAll returns every sample of the matching series as text.
func readAll(t *testing.T, b tsdb.BlockReader, mint, maxt int64, ms []*labels.Matcher) []string {
	t.Helper()
	q, err := tsdb.NewBlockQuerier(b, mint, maxt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), true, nil, ms...)
	var out []string
	var it chunkenc.Iterator
	for set.Next() {
		s := set.At()
		var sb strings.Builder
		sb.WriteString(s.Labels().String())
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			switch vt {
			case chunkenc.ValFloat:
				ts, v := it.At()
				fmt.Fprintf(&sb, " %d:%g", ts, v)
			case chunkenc.ValHistogram:
				ts, h := it.AtHistogram(nil)
				fmt.Fprintf(&sb, " %d:%s", ts, h)
			}
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
		out = append(out, sb.String())
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func prepare(t *testing.T, b *Block) {
	t.Helper()
	release, err := b.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
}

func indexFile(dir string, id ulid.ULID) string { return filepath.Join(dir, id.String(), "index") }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestIndexCache(t *testing.T) {
	bkt := newBucket(t)
	ext := map[string]string{"cluster": "a"}
	recA, _ := uploaded(t, bkt, 0, 3600_000, ext)
	recB, _ := uploaded(t, bkt, 3600_000, 2*3600_000, ext)
	ctx := context.Background()
	indexGets := func(rec schemas.BlockRecord) int { return bkt.Calls("Get", rec.ULID.String()+"/index") }

	t.Run("single-flight download, reused after restart", func(t *testing.T) {
		dir := t.TempDir()
		c := newCache(t, bkt, dir, CacheOptions{})
		b := newBlock(t, recA, c)
		before := indexGets(recA)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				release, err := b.Prepare(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				release()
			})
		}
		wg.Wait()
		if n := indexGets(recA) - before; n != 1 {
			t.Fatalf("%d downloads, want 1", n)
		}
		if c.Bytes() != recA.FileSize("index") {
			t.Fatalf("cache holds %d bytes, want %d", c.Bytes(), recA.FileSize("index"))
		}
		c.Close()

		c2 := newCache(t, bkt, dir, CacheOptions{})
		if c2.Bytes() != recA.FileSize("index") {
			t.Fatalf("after restart the cache holds %d bytes, want %d", c2.Bytes(), recA.FileSize("index"))
		}
		b2 := newBlock(t, recA, c2)
		if got := len(readAll(t, b2, 0, 3600_000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "i", "3")})); got != 1 {
			t.Fatalf("got %d series", got)
		}
		if n := indexGets(recA) - before; n != 1 {
			t.Fatalf("%d downloads after restart, want 1", n)
		}
	})

	t.Run("bad cached file is downloaded again", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			data func(size int64) []byte
		}{
			{"wrong size", func(int64) []byte { return []byte("short") }},
			{"right size, wrong bytes", func(size int64) []byte { return make([]byte, size) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if err := os.MkdirAll(filepath.Join(dir, recA.ULID.String()), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(indexFile(dir, recA.ULID), tc.data(recA.FileSize("index")), 0o644); err != nil {
					t.Fatal(err)
				}
				before := indexGets(recA)
				b := newBlock(t, recA, newCache(t, bkt, dir, CacheOptions{}))
				prepare(t, b)
				if n := indexGets(recA) - before; n != 1 {
					t.Fatalf("%d downloads, want 1", n)
				}
			})
		}
	})

	t.Run("least recently used index is evicted, one in use is not", func(t *testing.T) {
		dir := t.TempDir()
		c := newCache(t, bkt, dir, CacheOptions{MaxBytes: max(recA.FileSize("index"), recB.FileSize("index")) + 1})
		a, b := newBlock(t, recA, c), newBlock(t, recB, c)

		ir, err := a.Index()
		if err != nil {
			t.Fatal(err)
		}
		releaseB, err := b.Prepare(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !exists(indexFile(dir, recA.ULID)) || !exists(indexFile(dir, recB.ULID)) {
			t.Fatal("an index in use was evicted")
		}
		// Reading a's index still works while over budget.
		if _, err := ir.LabelNames(ctx); err != nil {
			t.Fatal(err)
		}
		ir.Close()
		if exists(indexFile(dir, recA.ULID)) {
			t.Fatal("a was not evicted once closed")
		}
		releaseB()
		if !exists(indexFile(dir, recB.ULID)) {
			t.Fatal("b was evicted though the cache fits it")
		}
		if c.Bytes() > c.maxBytes {
			t.Fatalf("cache holds %d bytes, limit %d", c.Bytes(), c.maxBytes)
		}
		// a comes back on demand, and b, now least recently used, makes room.
		prepare(t, a)
		if exists(indexFile(dir, recB.ULID)) {
			t.Fatal("b was not evicted for a")
		}
	})

	t.Run("dropped block is removed after its last reader", func(t *testing.T) {
		dir := t.TempDir()
		c := newCache(t, bkt, dir, CacheOptions{})
		a := newBlock(t, recA, c)
		ir, err := a.Index()
		if err != nil {
			t.Fatal(err)
		}
		a.Drop()
		if !exists(indexFile(dir, recA.ULID)) {
			t.Fatal("index removed while in use")
		}
		if _, err := ir.LabelNames(ctx); err != nil {
			t.Fatal(err)
		}
		ir.Close()
		if exists(filepath.Join(dir, recA.ULID.String())) {
			t.Fatal("dropped block's directory still exists")
		}
		if _, err := a.Index(); !errors.Is(err, ErrDeleted) {
			t.Fatalf("Index after Drop: got %v, want ErrDeleted", err)
		}
		if _, err := a.Chunks(); !errors.Is(err, ErrDeleted) {
			t.Fatalf("Chunks after Drop: got %v, want ErrDeleted", err)
		}
		if c.Bytes() != 0 {
			t.Fatalf("cache holds %d bytes", c.Bytes())
		}
	})

	t.Run("prune removes blocks not kept", func(t *testing.T) {
		dir := t.TempDir()
		c := newCache(t, bkt, dir, CacheOptions{})
		for _, rec := range []schemas.BlockRecord{recA, recB} {
			prepare(t, newBlock(t, rec, c))
		}
		stray := filepath.Join(dir, ulid.MustNew(1, nil).String())
		if err := os.MkdirAll(stray, 0o755); err != nil {
			t.Fatal(err)
		}
		c.Prune(func(id ulid.ULID) bool { return id == recB.ULID })
		if exists(indexFile(dir, recA.ULID)) || exists(stray) || !exists(indexFile(dir, recB.ULID)) {
			t.Fatal("prune kept the wrong files")
		}
		if c.Bytes() != recB.FileSize("index") {
			t.Fatalf("cache holds %d bytes, want %d", c.Bytes(), recB.FileSize("index"))
		}
	})

	if n := bkt.Calls("Iter", ""); n != 0 {
		t.Fatalf("the bucket was listed %d times", n)
	}
}

func TestNewRejectsRecordsWithoutSegments(t *testing.T) {
	c := newCache(t, newBucket(t), t.TempDir(), CacheOptions{})
	rec := schemas.BlockRecord{ULID: ulid.MustNew(1, nil), Files: []schemas.File{{RelPath: "index", Size: 100}}}
	if _, err := New(rec, c); err == nil {
		t.Fatal("want an error")
	}
	rec.Files = append(rec.Files, schemas.File{RelPath: "chunks/000001", Size: 8})
	if _, err := New(rec, c); err == nil {
		t.Fatal("want an error for an empty segment")
	}
}
