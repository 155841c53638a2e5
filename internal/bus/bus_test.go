package bus

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/schemas"
)

// Generous: tests share two cores with other packages' tests.
const testTimeout = 60 * time.Second

// testLogWriter sends logs to t.Log until the test is over; a server or client goroutine
// that logs after that is ignored instead of panicking the test binary.
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

func testLogger(t testing.TB, level zerolog.Level) zerolog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func startServer(t testing.TB, o EmbeddedOptions) *Embedded {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	o.Log = testLogger(t, zerolog.WarnLevel)
	e, err := StartEmbedded(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func connect(t testing.TB, cfg Config) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b, err := Connect(ctx, cfg, testLogger(t, zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// newBus starts a server and connects to it.
func newBus(t testing.TB) (*Embedded, *Bus) {
	e := startServer(t, EmbeddedOptions{})
	return e, connect(t, Config{URL: e.ClientURL()})
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func readyEvent(site string) schemas.BlockReady {
	return schemas.BlockReady{
		Version: schemas.Version,
		Site:    site,
		ULID:    ulid.Make(),
		MinTime: 0,
		MaxTime: 7_200_000,
		Labels:  map[string]string{"cluster": "eu1"},
		Files: []schemas.File{
			{RelPath: "chunks/000001", Size: 10},
			{RelPath: "index", Size: 10},
			{RelPath: "meta.json", Size: 10},
		},
		Producer: "sidecar",
	}
}

func publishReady(t testing.TB, b *Bus, ev schemas.BlockReady) {
	t.Helper()
	if err := b.PublishBlockEvent(testContext(t), schemas.EventReady, ev.Site, ev.ULID, ev); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitPending(t testing.TB, b *Bus, durable string, want uint64) {
	t.Helper()
	var last uint64
	var lastErr error
	waitFor(t, "pending of "+durable, func() bool {
		last, lastErr = b.Pending(context.Background(), durable)
		return lastErr == nil && last == want
	})
}

// runStage runs a stage in the background; the returned stop cancels it and returns Run's
// result. The test's cleanup stops it too.
func runStage[E schemas.Validator](t testing.TB, b *Bus, spec ConsumerSpec, h Handler[E]) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, b, spec, h) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(testTimeout):
				err = errors.New("run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func uploadSpec(b *Bus) ConsumerSpec {
	return ConsumerSpec{
		Stream:         StreamEvents,
		Durable:        "upload",
		FilterSubjects: []string{b.EventFilter(schemas.EventReady)},
		AckWait:        5 * time.Second,
		Backoff:        constantBackoff(100 * time.Millisecond),
	}
}

func constantBackoff(d time.Duration) func() backoff.BackOff {
	return func() backoff.BackOff { return backoff.NewConstantBackOff(d) }
}

// calls counts handler invocations by block.
type calls struct {
	mu sync.Mutex
	n  map[ulid.ULID]int
	at []time.Time
}

func (c *calls) add(id ulid.ULID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[ulid.ULID]int{}
	}
	c.n[id]++
	c.at = append(c.at, time.Now())
	return c.n[id]
}

func (c *calls) of(id ulid.ULID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.at)
}

func TestConnectSetupIsIdempotent(t *testing.T) {
	t.Parallel()
	e := startServer(t, EmbeddedOptions{})
	cfg := Config{URL: e.ClientURL(), Name: "test"}
	first := connect(t, cfg)
	ctx := testContext(t)
	before, err := first.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	second := connect(t, cfg)
	if err := second.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		stream    string
		subject   string
		retention jetstream.RetentionPolicy
		maxAge    time.Duration
	}{
		{StreamEvents, "blockflow.block.>", jetstream.LimitsPolicy, eventsMaxAge},
		{StreamJobs, "blockflow.job.>", jetstream.WorkQueuePolicy, 0},
		{StreamDLQ, "blockflow.dlq.>", jetstream.LimitsPolicy, deadLettersMaxAge},
	} {
		s, err := second.js.Stream(ctx, tc.stream)
		if err != nil {
			t.Fatal(err)
		}
		c := s.CachedInfo().Config
		if len(c.Subjects) != 1 || c.Subjects[0] != tc.subject || c.Retention != tc.retention ||
			c.MaxAge != tc.maxAge || c.Duplicates != dedupWindow || c.Storage != jetstream.FileStorage {
			t.Errorf("stream %s config = %+v", tc.stream, c)
		}
	}
	after, err := second.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if !before.CachedInfo().Created.Equal(after.CachedInfo().Created) {
		t.Error("second Connect re-created EVENTS")
	}
	kv, err := second.js.KeyValue(ctx, CatalogueBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != catalogueHistory {
		t.Errorf("catalogue history = %d, want %d", st.History(), catalogueHistory)
	}
}

func TestConnectGivesUpWhenContextEndsAndHidesSecrets(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	// Nothing listens on this port: the connection keeps retrying until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, Config{URL: "nats://user:secret@127.0.0.1:1", Password: "secret2"}, zerolog.New(&logs))
	if err == nil {
		t.Fatal("Connect succeeded without a server")
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(logs.String(), "secret") {
		t.Errorf("a secret leaked: %v\n%s", err, logs.String())
	}
	if !strings.Contains(err.Error(), "wait for JetStream") || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("error %q and logs do not say what failed:\n%s", err, logs.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSubjectToken(t *testing.T) {
	for in, want := range map[string]string{
		"":            "_",
		"eu-1":        "eu-1",
		"eu.1":        "eu_1",
		"a*b>c d\te":  "a_b_c_d_e",
		"prod/site-7": "prod/site-7",
	} {
		if got := SubjectToken(in); got != want {
			t.Errorf("SubjectToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                           "nats://127.0.0.1:4222",
		"nats://user:pass@a:4222, tls://token@b:4222":     "nats://a:4222,tls://b:4222",
		"nats://127.0.0.1:4222,nats://u:p@127.0.0.1:4223": "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	exp := func() backoff.BackOff {
		return backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second), backoff.WithRandomizationFactor(0),
			backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	}
	stopAfter2 := func() backoff.BackOff { return backoff.WithMaxRetries(backoff.NewConstantBackOff(time.Second), 2) }
	for _, tc := range []struct {
		schedule func() backoff.BackOff
		n        uint64
		want     time.Duration
	}{
		{exp, 1, time.Second},
		{exp, 2, 1500 * time.Millisecond},
		{exp, 30, 5 * time.Second},
		{stopAfter2, 2, time.Second},
		{stopAfter2, 3, backoff.Stop},
	} {
		if got := retryDelay(tc.schedule, tc.n); got != tc.want {
			t.Errorf("retryDelay(n=%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}

func TestPublishBlockEventDeduplicates(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	ev := readyEvent("eu.1")
	publishReady(t, b, ev)
	publishReady(t, b, ev)
	publishReady(t, b, readyEvent("eu.1"))

	s, err := b.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("EVENTS holds %d messages, want 2", info.State.Msgs)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := "blockflow.block.ready.eu_1." + ev.ULID.String(); m.Subject != want {
		t.Errorf("subject = %q, want %q", m.Subject, want)
	}
	if want := "ready:eu_1:" + ev.ULID.String(); m.Header.Get(jetstream.MsgIDHeader) != want {
		t.Errorf("msg id = %q, want %q", m.Header.Get(jetstream.MsgIDHeader), want)
	}
}

func TestPublishJob(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	ctx := testContext(t)
	for range 2 {
		if err := b.PublishJob(ctx, "compact", "g1", "job-1", map[string]string{"id": "job-1"}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.js.Stream(ctx, StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("JOBS holds %d messages, want 1", info.State.Msgs)
	}
	if err := b.PublishJob(ctx, "compact", "g1", "", nil); err == nil {
		t.Error("a job without an id was published")
	}
}
