package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
)

// testBucket checks the behaviour every Bucket implementation promises. Each case uses
// its own names, so the cases share one bucket.
func testBucket(t *testing.T, bkt objstore.Bucket) {
	cases := []struct {
		name string
		run  func(t *testing.T, ctx context.Context, bkt objstore.Bucket)
	}{
		{"upload and get", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "get/a/obj", "hello, bucket")
			if got := get(t, bkt, "get/a/obj"); got != "hello, bucket" {
				t.Fatalf("get: %q", got)
			}
			size, err := bkt.Size(ctx, "get/a/obj")
			if err != nil || size != 13 {
				t.Fatalf("size: %d, %v", size, err)
			}
			if ok, err := bkt.Exists(ctx, "get/a/obj"); !ok || err != nil {
				t.Fatalf("exists: %v, %v", ok, err)
			}
		}},
		{"empty object", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "empty/obj", "")
			if got := get(t, bkt, "empty/obj"); got != "" {
				t.Fatalf("get: %q", got)
			}
			if got := getRange(t, bkt, "empty/obj", 0, 10); got != "" {
				t.Fatalf("get range: %q", got)
			}
		}},
		{"unknown size", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			want := strings.Repeat("0123456789", 10000)
			// A bare io.Reader, so no implementation can find the size another way.
			r := struct{ io.Reader }{strings.NewReader(want)}
			if err := bkt.Upload(ctx, "unknown/obj", r, -1); err != nil {
				t.Fatal(err)
			}
			if got := get(t, bkt, "unknown/obj"); got != want {
				t.Fatalf("get: %d bytes, want %d", len(got), len(want))
			}
		}},
		{"get range", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "range/obj", "0123456789")
			for _, tc := range []struct {
				off, length int64
				want        string
			}{
				{0, 3, "012"},
				{0, 1, "0"},
				{4, 2, "45"},
				{3, -1, "3456789"},
				{0, -1, "0123456789"},
				{7, 100, "789"},
				{9, 1, "9"},
				{2, 0, ""},
				{10, 5, ""},
				{10, -1, ""},
				{25, 3, ""},
				{25, -1, ""},
			} {
				if got := getRange(t, bkt, "range/obj", tc.off, tc.length); got != tc.want {
					t.Errorf("GetRange(%d, %d) = %q, want %q", tc.off, tc.length, got, tc.want)
				}
			}
			if _, err := bkt.GetRange(ctx, "range/obj", -1, 2); err == nil {
				t.Error("GetRange with a negative offset: no error")
			}
		}},
		{"not found", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "missing/dir/obj", "x")
			for _, name := range []string{"missing/nothing", "missing/dir"} {
				if _, err := bkt.Get(ctx, name); !objstore.IsNotFound(err) {
					t.Errorf("Get(%q): %v, want not found", name, err)
				}
				if _, err := bkt.GetRange(ctx, name, 0, 1); !objstore.IsNotFound(err) {
					t.Errorf("GetRange(%q, 0, 1): %v, want not found", name, err)
				}
				if _, err := bkt.GetRange(ctx, name, 0, 0); !objstore.IsNotFound(err) {
					t.Errorf("GetRange(%q, 0, 0): %v, want not found", name, err)
				}
				if _, err := bkt.Size(ctx, name); !objstore.IsNotFound(err) {
					t.Errorf("Size(%q): %v, want not found", name, err)
				}
				if ok, err := bkt.Exists(ctx, name); ok || err != nil {
					t.Errorf("Exists(%q) = %v, %v", name, ok, err)
				}
			}
		}},
		{"overwrite is atomic", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			versions := []string{strings.Repeat("a", 300<<10), strings.Repeat("b", 100<<10)}
			upload(t, bkt, "overwrite/obj", versions[0])
			var wg sync.WaitGroup
			done := make(chan struct{})
			wg.Go(func() {
				defer close(done)
				for i := range 10 {
					if err := bkt.Upload(ctx, "overwrite/obj", strings.NewReader(versions[i%2]), int64(len(versions[i%2]))); err != nil {
						t.Error(err)
						return
					}
				}
			})
			reads := 0
			for stop := false; !stop; reads++ {
				select {
				case <-done:
					stop = true
				default:
				}
				if got := get(t, bkt, "overwrite/obj"); !slices.Contains(versions, got) {
					t.Fatalf("read %d: a torn object of %d bytes", reads, len(got))
				}
			}
			wg.Wait()
			if got := get(t, bkt, "overwrite/obj"); got != versions[1] {
				t.Fatalf("final object has %d bytes, want the last version", len(got))
			}
		}},
		{"short reader leaves no object", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			// Not seekable, so minio-go cannot retry (and spend seconds on it).
			r := struct{ io.Reader }{strings.NewReader("abc")}
			if err := bkt.Upload(ctx, "short/obj", r, 10); err == nil {
				t.Fatal("upload of 3 bytes announced as 10: no error")
			}
			if ok, err := bkt.Exists(ctx, "short/obj"); ok || err != nil {
				t.Fatalf("exists after failed upload: %v, %v", ok, err)
			}
		}},
		{"delete", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "del/x/1", "1")
			upload(t, bkt, "del/x/2", "2")
			for range 2 { // idempotent
				if err := bkt.Delete(ctx, "del/x/1"); err != nil {
					t.Fatal(err)
				}
			}
			if ok, _ := bkt.Exists(ctx, "del/x/1"); ok {
				t.Fatal("del/x/1 exists after delete")
			}
			if got := iter(t, bkt, "del", false); !slices.Equal(got, []string{"del/x/"}) {
				t.Fatalf("iter after first delete: %q", got)
			}
			if err := bkt.Delete(ctx, "del/x/2"); err != nil {
				t.Fatal(err)
			}
			if got := iter(t, bkt, "del", true); len(got) != 0 {
				t.Fatalf("iter after deleting all: %q", got)
			}
			if got := iter(t, bkt, "", false); slices.Contains(got, "del/") {
				t.Fatalf("an empty prefix is listed: %q", got)
			}
			if err := bkt.Delete(ctx, "del/never/was"); err != nil {
				t.Fatalf("delete of a missing object: %v", err)
			}
		}},
		{"iter", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			for _, name := range []string{"it/a", "it/b/c", "it/b/d/e", "it/b.x", "it/c"} {
				upload(t, bkt, name, name)
			}
			for _, tc := range []struct {
				dir       string
				recursive bool
				want      []string
			}{
				{"it", false, []string{"it/a", "it/b.x", "it/b/", "it/c"}},
				{"it/", false, []string{"it/a", "it/b.x", "it/b/", "it/c"}},
				{"it/b", false, []string{"it/b/c", "it/b/d/"}},
				{"it", true, []string{"it/a", "it/b.x", "it/b/c", "it/b/d/e", "it/c"}},
				{"it/b/", true, []string{"it/b/c", "it/b/d/e"}},
				{"it/none", false, nil},
				{"it/none", true, nil},
				{"it/a", false, nil}, // an object, not a prefix
			} {
				if got := iter(t, bkt, tc.dir, tc.recursive); !slices.Equal(got, tc.want) {
					t.Errorf("Iter(%q, recursive=%v) = %q, want %q", tc.dir, tc.recursive, got, tc.want)
				}
			}
			if got := iter(t, bkt, "", false); !slices.Contains(got, "it/") {
				t.Errorf("Iter(\"\") = %q, want it/ among them", got)
			}
			stop := errors.New("stop")
			calls := 0
			err := bkt.Iter(ctx, "it", true, func(string) error { calls++; return stop })
			if !errors.Is(err, stop) || calls != 1 {
				t.Errorf("Iter stopped by f: %v after %d calls", err, calls)
			}
		}},
		{"cancelled context", func(t *testing.T, ctx context.Context, bkt objstore.Bucket) {
			upload(t, bkt, "cancel/obj", "x")
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			if err := bkt.Upload(ctx, "cancel/new", strings.NewReader("x"), 1); err == nil {
				t.Error("upload with a cancelled context: no error")
			}
			if _, err := bkt.Get(ctx, "cancel/obj"); err == nil {
				t.Error("get with a cancelled context: no error")
			}
			if err := bkt.Iter(ctx, "", false, func(string) error { return nil }); err == nil {
				t.Error("iter with a cancelled context: no error")
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, t.Context(), bkt) })
	}
}

func upload(t *testing.T, bkt objstore.Bucket, name, content string) {
	t.Helper()
	if err := bkt.Upload(t.Context(), name, strings.NewReader(content), int64(len(content))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, bkt objstore.Bucket, name string) string {
	t.Helper()
	r, err := bkt.Get(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, r)
}

func getRange(t *testing.T, bkt objstore.Bucket, name string, off, length int64) string {
	t.Helper()
	r, err := bkt.GetRange(t.Context(), name, off, length)
	if err != nil {
		t.Fatalf("GetRange(%q, %d, %d): %v", name, off, length, err)
	}
	return readAll(t, r)
}

func readAll(t *testing.T, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// iter returns the names Iter gives, sorted: the order is not part of the contract (MinIO
// lists a page's objects before its prefixes).
func iter(t *testing.T, bkt objstore.Bucket, dir string, recursive bool) []string {
	t.Helper()
	var names []string
	if err := bkt.Iter(t.Context(), dir, recursive, func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

func openYAML(t *testing.T, config string) objstore.Bucket {
	t.Helper()
	bkt, err := objstore.NewFromYAML(t.Context(), []byte(config), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	return bkt
}

func TestFilesystem(t *testing.T) {
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testBucket(t, bkt)
}

func TestFilesystemPrefix(t *testing.T) {
	dir := t.TempDir()
	testBucket(t, openYAML(t, "type: FILESYSTEM\nconfig:\n  directory: "+dir+"\nprefix: tenant/a\n"))
	raw := openYAML(t, "type: filesystem\nconfig:\n  directory: "+dir+"\n")
	if got := iter(t, raw, "", false); !slices.Equal(got, []string{"tenant/"}) {
		t.Fatalf("root of the unprefixed bucket: %q", got)
	}
	if got := get(t, raw, "tenant/a/get/a/obj"); got != "hello, bucket" {
		t.Fatalf("object under the prefix: %q", got)
	}
}

func TestFilesystemRejectsEscapingNames(t *testing.T) {
	dir := t.TempDir()
	bkt, err := objstore.NewFilesystem(dir + "/bucket")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, name := range []string{"", "../outside", "a/../../outside", "/etc/passwd", "a//b", "a/./b", "a/", ".blockflow-tmp-x"} {
		if err := bkt.Upload(ctx, name, strings.NewReader("x"), 1); err == nil {
			t.Errorf("Upload(%q): no error", name)
		}
		if _, err := bkt.Get(ctx, name); err == nil || objstore.IsNotFound(err) {
			t.Errorf("Get(%q): %v, want an invalid-name error", name, err)
		}
		if err := bkt.Delete(ctx, name); err == nil {
			t.Errorf("Delete(%q): no error", name)
		}
	}
	if err := bkt.Iter(ctx, "../", false, func(string) error { return nil }); err == nil {
		t.Error("Iter(\"../\"): no error")
	}
}

// TestS3 runs everything that needs S3 against one MinIO, a bucket per subtest.
func TestS3(t *testing.T) {
	m := testenv.StartMinIO(t)
	t.Run("conformance", func(t *testing.T) {
		testBucket(t, openYAML(t, m.CreateBucket(t, "conformance")))
	})
	t.Run("prefix", func(t *testing.T) {
		config := m.CreateBucket(t, "prefix")
		bkt := openYAML(t, config+"prefix: tenant-a\n")
		upload(t, bkt, "01ABC/meta.json", "{}")
		if got := iter(t, bkt, "", false); !slices.Equal(got, []string{"01ABC/"}) {
			t.Fatalf("root of the prefixed bucket: %q", got)
		}
		if got := iter(t, bkt, "01ABC", true); !slices.Equal(got, []string{"01ABC/meta.json"}) {
			t.Fatalf("recursive iter of the prefixed bucket: %q", got)
		}
		raw := openYAML(t, config)
		if got := iter(t, raw, "", true); !slices.Equal(got, []string{"tenant-a/01ABC/meta.json"}) {
			t.Fatalf("unprefixed bucket: %q", got)
		}
	})
	t.Run("config", func(t *testing.T) { testS3Config(t, m) })
	t.Run("instrumented", func(t *testing.T) { testS3Instrumented(t, m) })
	// Last: it takes MinIO away.
	t.Run("outage", func(t *testing.T) { testS3Outage(t, m) })
}
