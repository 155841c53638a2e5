package objstore

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values, as in Thanos (Size is Thanos's "attributes").
const (
	OpGet        = "get"
	OpGetRange   = "get_range"
	OpUpload     = "upload"
	OpExists     = "exists"
	OpDelete     = "delete"
	OpIter       = "iter"
	OpAttributes = "attributes"
)

var allOps = []string{OpGet, OpGetRange, OpUpload, OpExists, OpDelete, OpIter, OpAttributes}

// metrics are Thanos's objstore metrics, so its dashboards and alerts work unchanged.
type metrics struct {
	ops         *prometheus.CounterVec
	failures    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	transferred *prometheus.HistogramVec
	fetched     *prometheus.CounterVec
	lastUpload  *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{"bucket", "operation"}
	return &metrics{
		ops: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "objstore_bucket_operations_total",
			Help: "Total number of all attempted operations against a bucket.",
		}, labels)),
		failures: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "objstore_bucket_operation_failures_total",
			Help: "Total number of operations against a bucket that failed (a missing object on get, get_range, exists or attributes is not a failure).",
		}, labels)),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "objstore_bucket_operation_duration_seconds",
			Help:    "Duration of successful operations against a bucket; for get and get_range until the reader is closed.",
			Buckets: []float64{0.001, 0.01, 0.1, 0.3, 0.6, 1, 3, 6, 9, 20, 30, 60, 90, 120},
		}, labels)),
		transferred: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "objstore_bucket_operation_transferred_bytes",
			Help:    "Number of bytes transferred from or to the bucket per operation.",
			Buckets: prometheus.ExponentialBuckets(2<<14, 2, 16),
		}, labels)),
		fetched: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "objstore_bucket_operation_fetched_bytes_total",
			Help: "Total number of bytes fetched from a bucket.",
		}, labels)),
		lastUpload: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "objstore_bucket_last_successful_upload_time",
			Help: "Second timestamp of the last successful upload to a bucket.",
		}, []string{"bucket"})),
	}
}

// register registers c, or returns the collector already registered in its place, so
// several buckets (or several wrappers of one) can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing
		}
	}
	panic(err)
}

type instrumented struct {
	bkt Bucket
	m   *metrics
}

// Instrument returns b with its operations counted and timed on reg.
func Instrument(b Bucket, reg prometheus.Registerer) Bucket {
	m := newMetrics(reg)
	for _, op := range allOps {
		// Present from the start, so "no iter calls" reads as 0, not as absent.
		m.ops.WithLabelValues(b.Name(), op)
		m.failures.WithLabelValues(b.Name(), op)
	}
	return &instrumented{bkt: b, m: m}
}

// track counts the start of op and returns the function that records its end.
func (b *instrumented) track(op string) func(err error) {
	b.m.ops.WithLabelValues(b.bkt.Name(), op).Inc()
	start := time.Now()
	return func(err error) {
		if err != nil {
			if !expectedError(op, err) {
				b.m.failures.WithLabelValues(b.bkt.Name(), op).Inc()
			}
			return
		}
		b.m.duration.WithLabelValues(b.bkt.Name(), op).Observe(time.Since(start).Seconds())
	}
}

// expectedError tells errors that say nothing about the bucket's health: a read of a
// missing object, or a caller that gave up.
func expectedError(op string, err error) bool {
	if errors.Is(err, context.Canceled) {
		return true
	}
	return IsNotFound(err) && (op == OpGet || op == OpGetRange || op == OpAttributes)
}

func (b *instrumented) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return b.read(OpGet, func() (io.ReadCloser, error) { return b.bkt.Get(ctx, name) })
}

func (b *instrumented) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	return b.read(OpGetRange, func() (io.ReadCloser, error) { return b.bkt.GetRange(ctx, name, off, length) })
}

// read runs a get or get_range; the operation ends when the caller closes the reader.
func (b *instrumented) read(op string, get func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	done := b.track(op)
	r, err := get()
	if err != nil {
		done(err)
		return nil, err
	}
	return &countingReadCloser{ReadCloser: r, done: func(n int64, err error) {
		done(err)
		b.m.transferred.WithLabelValues(b.bkt.Name(), op).Observe(float64(n))
		b.m.fetched.WithLabelValues(b.bkt.Name(), op).Add(float64(n))
	}}, nil
}

// countingReadCloser counts the bytes read and reports them, with the first read error
// other than io.EOF, on Close.
type countingReadCloser struct {
	io.ReadCloser
	n    int64
	err  error
	done func(n int64, err error)
}

func (r *countingReadCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n += int64(n)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *countingReadCloser) Close() error {
	err := r.ReadCloser.Close()
	if r.done != nil {
		if r.err == nil {
			r.err = err
		}
		r.done(r.n, r.err)
		r.done = nil
	}
	return err
}

func (b *instrumented) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	done := b.track(OpUpload)
	counted := &countingReader{r: r}
	var body io.Reader = counted
	if ra, ok := r.(io.ReaderAt); ok && size >= 0 {
		// Keep ReaderAt visible: minio-go uploads the parts of a ReaderAt in parallel.
		body = struct {
			io.Reader
			io.ReaderAt
		}{counted, ra}
	}
	err := b.bkt.Upload(ctx, name, body, size)
	done(err)
	if err == nil {
		n := counted.n
		if size >= 0 {
			n = size // parts read through ReadAt are not counted
		}
		b.m.transferred.WithLabelValues(b.bkt.Name(), OpUpload).Observe(float64(n))
		b.m.lastUpload.WithLabelValues(b.bkt.Name()).SetToCurrentTime()
	}
	return err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	return n, err
}

func (b *instrumented) Exists(ctx context.Context, name string) (bool, error) {
	done := b.track(OpExists)
	ok, err := b.bkt.Exists(ctx, name)
	done(err)
	return ok, err
}

func (b *instrumented) Delete(ctx context.Context, name string) error {
	done := b.track(OpDelete)
	err := b.bkt.Delete(ctx, name)
	done(err)
	return err
}

func (b *instrumented) Iter(ctx context.Context, dir string, recursive bool, f func(name string) error) error {
	done := b.track(OpIter)
	err := b.bkt.Iter(ctx, dir, recursive, f)
	done(err)
	return err
}

func (b *instrumented) Size(ctx context.Context, name string) (int64, error) {
	done := b.track(OpAttributes)
	n, err := b.bkt.Size(ctx, name)
	done(err)
	return n, err
}

func (b *instrumented) Name() string { return b.bkt.Name() }

func (b *instrumented) Close() error { return b.bkt.Close() }
