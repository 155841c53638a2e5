package compact_test

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
	"github.com/blockflow/blockflow/workers/planner"
	"github.com/blockflow/blockflow/workers/retention"
)

const testTimeout = 2 * time.Minute

const (
	hour    = int64(time.Hour / time.Millisecond)
	step    = int64(15 * time.Second / time.Millisecond)
	range2h = 2 * hour
)

// start is a 2d-aligned instant, so test data fills the planner's aligned ranges.
var start = time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC).UnixMilli() / (48 * hour) * (48 * hour)

// env is a bus (the real embedded server), a filesystem bucket and scratch directories.
type env struct {
	bus       *bus.Bus
	url       string
	bucketDir string
	bkt       objstore.Bucket
	blocksDir string
	log       zerolog.Logger
}

func newEnv(t testing.TB) *env {
	t.Helper()
	b, url := testenv.StartBus(t)
	dir := t.TempDir()
	bkt, err := objstore.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{bus: b, url: url, bucketDir: dir, bkt: bkt, blocksDir: t.TempDir(), log: testLogger(t)}
}

// testLogger logs warnings and errors to the test log.
func testLogger(t testing.TB) zerolog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(w.close)
	return zerolog.New(w).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// series describes the test data: n float series, counters with a sample every step;
// value(i, t) is the same in every replica. Samples in a gap are missing.
type series struct {
	n    int
	gaps [][2]int64 // [from, to) in ms
}

func value(i int, t int64) float64 { return float64(i+1) * float64(t/step) }

func (s series) at(mint, maxt int64) []storage.Series {
	out := make([]storage.Series, 0, s.n)
	for i := range s.n {
		lset := labels.FromStrings("__name__", "test_requests_total", "i", fmt.Sprintf("%03d", i), "job", fmt.Sprint("job-", i%3))
		var samples []chunks.Sample
	next:
		for t := mint; t < maxt; t += step {
			for _, g := range s.gaps {
				if t >= g[0] && t < g[1] {
					continue next
				}
			}
			samples = append(samples, sample{t, value(i, t)})
		}
		out = append(out, storage.NewListSeries(lset, samples))
	}
	return out
}

// samples returns what s.at(mint, maxt) holds, by series.
func (s series) samples(mint, maxt int64) map[string][]sample {
	out := map[string][]sample{}
	for _, ser := range s.at(mint, maxt) {
		it := ser.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[ser.Labels().String()] = append(out[ser.Labels().String()], sample{ts, v})
		}
	}
	return out
}

type sample struct {
	t int64
	f float64
}

func (s sample) T() int64                      { return s.t }
func (s sample) ST() int64                     { return 0 }
func (s sample) F() float64                    { return s.f }
func (s sample) H() *histogram.Histogram       { return nil }
func (s sample) FH() *histogram.FloatHistogram { return nil }
func (s sample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s sample) Copy() chunks.Sample           { return s }

// writeBlock writes the data of [mint, maxt) as a level-1 block whose meta covers the
// whole range, as a block cut by Prometheus' head does.
func writeBlock(t testing.TB, dir string, s series, mint, maxt int64) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path, err := tsdb.CreateBlock(s.at(mint, maxt), dir, 2*(maxt-mint), promslog.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	blocktest.EditMeta(t, path, func(m *block.Meta) { m.MinTime, m.MaxTime = mint, maxt })
	return path
}

// upload puts a local block in the bucket as the upload stage does and catalogues it.
func (e *env) upload(t testing.TB, dir string, lbls map[string]string, hashes bool) schemas.BlockRecord {
	t.Helper()
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := block.GatherFiles(dir, hashes)
	if err != nil {
		t.Fatal(err)
	}
	meta.Thanos = block.Thanos{Labels: lbls, Source: block.SourceSidecar, Files: files, SegmentFiles: block.SegmentFiles(files)}
	return e.uploadMeta(t, dir, meta)
}

// uploadMeta puts a local block in the bucket with meta as its meta.json and catalogues
// it.
func (e *env) uploadMeta(t testing.TB, dir string, meta block.Meta) schemas.BlockRecord {
	t.Helper()
	ctx := context.Background()
	written, err := block.Upload(ctx, e.bkt, dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	rec := written.Record(schemas.StateLive)
	rec.Site = "test"
	if err := e.bus.Catalogue().Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// run starts fn in the background until the test ends (or stop is called) and fails the
// test if it returns an error.
func run(t testing.TB, fn func(ctx context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("background run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (e *env) newWorker(t testing.TB, o compact.Options) *compact.Worker {
	t.Helper()
	o.Bucket, o.Catalogue, o.Publisher, o.Logger = e.bkt, e.bus.Catalogue(), e.bus, e.log
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	w, err := compact.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (e *env) consumerSpec(slots int, ackWait time.Duration) bus.ConsumerSpec {
	return bus.ConsumerSpec{
		Stream: bus.StreamJobs, Durable: compact.Durable, FilterSubjects: []string{e.bus.JobFilter(schemas.JobCompact)},
		Slots: slots, AckWait: ackWait, Attempts: 5,
	}
}

// runPipeline runs the planner, a compaction worker pool and retention on e.
func (e *env) runPipeline(t testing.TB, cfg planner.Config, slots int, deleteDelay time.Duration) {
	w := e.newWorker(t, compact.Options{})
	run(t, func(ctx context.Context) error {
		return bus.Run(ctx, e.bus, e.consumerSpec(slots, compact.DefaultAckWait), w.Handle)
	})
	run(t, func(ctx context.Context) error {
		return planner.Run(ctx, planner.Options{
			Catalogue: e.bus.Catalogue(), Queue: e.bus, Leader: e.bus.Lease(planner.LeaseName, "test"), Config: cfg,
			Logger: e.log,
		})
	})
	run(t, func(ctx context.Context) error {
		return retention.Run(ctx, retention.Options{
			Bucket: e.bkt, Catalogue: e.bus.Catalogue(), Publisher: e.bus, Policy: retention.Policy{DeleteDelay: deleteDelay},
			Logger: e.log,
		})
	})
}

// records returns the catalogue's records.
func (e *env) records(t testing.TB) []schemas.BlockRecord {
	t.Helper()
	recs, err := e.bus.Catalogue().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func (e *env) record(t testing.TB, id ulid.ULID) schemas.BlockRecord {
	t.Helper()
	rec, _, err := e.bus.Catalogue().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func (e *env) exists(t testing.TB, name string) bool {
	t.Helper()
	ok, err := e.bkt.Exists(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// live returns the live blocks, by MinTime.
func live(recs []schemas.BlockRecord) []schemas.BlockRecord {
	var out []schemas.BlockRecord
	for _, r := range recs {
		if r.State == schemas.StateLive {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b schemas.BlockRecord) int {
		if c := cmp.Compare(a.MinTime, b.MinTime); c != 0 {
			return c
		}
		return a.ULID.Compare(b.ULID)
	})
	return out
}

func blockDir(e *env, id ulid.ULID) string { return filepath.Join(e.bucketDir, id.String()) }

// retentionDelay keeps marked blocks in the bucket for the length of a test.
const retentionDelay = time.Hour
