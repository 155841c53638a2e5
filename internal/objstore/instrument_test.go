package objstore_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
)

// checkInstrumented runs a fixed set of operations through an instrumented bkt and checks
// what the metrics say.
func checkInstrumented(t *testing.T, raw objstore.Bucket) {
	reg := prometheus.NewRegistry()
	bkt := objstore.Instrument(raw, reg)
	ctx := t.Context()

	if n := opCount(t, reg, raw.Name(), "objstore_bucket_operations_total", objstore.OpIter); n != 0 {
		t.Fatalf("iter count before any call: %v", n)
	}
	upload(t, bkt, "m/obj", "0123456789")
	get(t, bkt, "m/obj")
	getRange(t, bkt, "m/obj", 2, 3)
	if _, err := bkt.Get(ctx, "m/missing"); !objstore.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := bkt.Size(ctx, "m/missing"); !objstore.IsNotFound(err) {
		t.Fatal(err)
	}
	if ok, err := bkt.Exists(ctx, "m/missing"); ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := bkt.Delete(ctx, "m/obj"); err != nil {
		t.Fatal(err)
	}
	// A failure: the reader breaks half way.
	if err := bkt.Upload(ctx, "m/broken", io.MultiReader(strings.NewReader("ab"), errReader{}), 4); err == nil {
		t.Fatal("upload from a failing reader: no error")
	}
	iter(t, bkt, "m", false)

	for _, tc := range []struct {
		op              string
		calls, failures float64
	}{
		{objstore.OpUpload, 2, 1},
		{objstore.OpGet, 2, 0}, // not found is not a failure
		{objstore.OpGetRange, 1, 0},
		{objstore.OpExists, 1, 0},
		{objstore.OpAttributes, 1, 0},
		{objstore.OpDelete, 1, 0},
		{objstore.OpIter, 1, 0},
	} {
		if got := opCount(t, reg, raw.Name(), "objstore_bucket_operations_total", tc.op); got != tc.calls {
			t.Errorf("%s: %v calls, want %v", tc.op, got, tc.calls)
		}
		if got := opCount(t, reg, raw.Name(), "objstore_bucket_operation_failures_total", tc.op); got != tc.failures {
			t.Errorf("%s: %v failures, want %v", tc.op, got, tc.failures)
		}
	}
	if got := opCount(t, reg, raw.Name(), "objstore_bucket_operation_fetched_bytes_total", objstore.OpGet); got != 10 {
		t.Errorf("get fetched %v bytes, want 10", got)
	}
	if got := opCount(t, reg, raw.Name(), "objstore_bucket_operation_fetched_bytes_total", objstore.OpGetRange); got != 3 {
		t.Errorf("get_range fetched %v bytes, want 3", got)
	}
	// A second wrapper on the same registry shares the metrics instead of panicking.
	objstore.Instrument(raw, reg)
}

func opCount(t *testing.T, reg *prometheus.Registry, bucket, metric, op string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["bucket"] == bucket && labels["operation"] == op {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no %s{bucket=%q,operation=%q}", metric, bucket, op)
	return 0
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestInstrumentFilesystem(t *testing.T) {
	bkt, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	checkInstrumented(t, bkt)
}

func testS3Instrumented(t *testing.T, m *testenv.MinIO) {
	checkInstrumented(t, openYAML(t, m.CreateBucket(t, "instrumented")))
}

// readerAtRecorder is a Bucket that only records what Upload was given.
type readerAtRecorder struct {
	objstore.Bucket
	readerAt bool
}

func (b *readerAtRecorder) Name() string { return "recorder" }

func (b *readerAtRecorder) Upload(_ context.Context, _ string, r io.Reader, _ int64) error {
	_, b.readerAt = r.(io.ReaderAt)
	return nil
}

// minio-go uploads the parts of an io.ReaderAt in parallel; the wrapper must not hide it.
func TestInstrumentKeepsReaderAt(t *testing.T) {
	rec := &readerAtRecorder{}
	reg := prometheus.NewRegistry()
	bkt := objstore.Instrument(rec, reg)
	if err := bkt.Upload(t.Context(), "x", strings.NewReader("abc"), 3); err != nil {
		t.Fatal(err)
	}
	if !rec.readerAt {
		t.Fatal("the instrumented upload hid io.ReaderAt")
	}
	n, err := testutil.GatherAndCount(reg, "objstore_bucket_last_successful_upload_time")
	if err != nil || n != 1 {
		t.Fatalf("last successful upload time: %d series, %v", n, err)
	}
}
