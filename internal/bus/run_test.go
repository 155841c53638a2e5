package bus

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/schemas"
)

func TestRunAcksHandledEvents(t *testing.T) {
	t.Parallel()
	e := startServer(t, EmbeddedOptions{})
	reg := prometheus.NewRegistry()
	b := connect(t, Config{URL: e.ClientURL(), Registerer: reg})
	var c calls
	var sawLogger bool
	var mu sync.Mutex
	stop := runStage(t, b, uploadSpec(b), func(ctx context.Context, ev schemas.BlockReady) error {
		mu.Lock()
		sawLogger = zerolog.Ctx(ctx).GetLevel() != zerolog.Disabled
		mu.Unlock()
		c.add(ev.ULID)
		return nil
	})
	evs := []schemas.BlockReady{readyEvent("eu1"), readyEvent("eu2"), readyEvent("eu1")}
	for _, ev := range evs {
		publishReady(t, b, ev)
	}
	waitFor(t, "every event handled", func() bool { return c.total() == len(evs) })
	waitPending(t, b, "upload", 0)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, ev := range evs {
		if n := c.of(ev.ULID); n != 1 {
			t.Errorf("event %s handled %d times", ev.ULID, n)
		}
	}
	mu.Lock()
	if !sawLogger {
		t.Error("the handler's context carries no logger")
	}
	mu.Unlock()
	if got := testutil.ToFloat64(b.metrics.events.WithLabelValues("upload", resultOK)); got != 3 {
		t.Errorf("ok events = %v, want 3", got)
	}
	// ok, retry and dead_letter exist from the start, plus the histogram and the gauge.
	if n, err := testutil.GatherAndCount(reg, "blockflow_stage_events_total", "blockflow_stage_handle_seconds", "blockflow_stage_in_flight"); err != nil || n != 5 {
		t.Errorf("gathered %d series (%v), want 5", n, err)
	}

	// A second Run on the same durable sees nothing new: the acks held.
	var again calls
	runStage(t, b, uploadSpec(b), func(_ context.Context, ev schemas.BlockReady) error {
		again.add(ev.ULID)
		return nil
	})
	late := readyEvent("eu3")
	publishReady(t, b, late)
	waitFor(t, "the new event handled", func() bool { return again.of(late.ULID) == 1 })
	if again.total() != 1 {
		t.Errorf("a restarted stage handled %d events, want only the new one", again.total())
	}
}

func TestRunRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	spec := uploadSpec(b)
	spec.Backoff = constantBackoff(300 * time.Millisecond)
	var c calls
	runStage(t, b, spec, func(_ context.Context, ev schemas.BlockReady) error {
		if c.add(ev.ULID) == 1 {
			return errors.New("bucket unavailable")
		}
		return nil
	})
	ev := readyEvent("eu1")
	publishReady(t, b, ev)
	waitFor(t, "the retry", func() bool { return c.of(ev.ULID) == 2 })
	waitPending(t, b, "upload", 0)
	c.mu.Lock()
	gap := c.at[1].Sub(c.at[0])
	c.mu.Unlock()
	if gap < 250*time.Millisecond {
		t.Errorf("redelivered after %s, before the 300ms backoff", gap)
	}
	if got := testutil.ToFloat64(b.metrics.events.WithLabelValues("upload", resultRetry)); got != 1 {
		t.Errorf("retry events = %v, want 1", got)
	}
	if dl, err := b.DeadLetters(testContext(t), "upload"); err != nil || len(dl) != 0 {
		t.Errorf("dead letters = %v, %v; want none", dl, err)
	}
}

func TestRunDeadLetters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		data       func(ev schemas.BlockReady) any
		handler    func(n int) error
		wantCalls  int
		wantReason string
	}{
		{
			name:       "permanent error",
			handler:    func(int) error { return Permanent(errors.New("corrupt index")) },
			wantCalls:  1,
			wantReason: "corrupt index",
		},
		{
			name:       "malformed JSON",
			data:       func(schemas.BlockReady) any { return []byte(`{"version": 1, "site": `) },
			wantReason: "decode",
		},
		{
			name: "invalid event",
			data: func(ev schemas.BlockReady) any {
				ev.Version = 99
				return ev
			},
			wantReason: "unsupported event version 99",
		},
		{
			name:       "attempts exhausted",
			handler:    func(n int) error { return errors.New("bucket unavailable") },
			wantCalls:  3,
			wantReason: "retries exhausted: bucket unavailable",
		},
		{
			name: "panic",
			handler: func(int) error {
				panic("nil map")
			},
			wantCalls:  3,
			wantReason: "retries exhausted: handler panicked: nil map",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, b := newBus(t)
			spec := uploadSpec(b)
			spec.Attempts = 3
			spec.Backoff = constantBackoff(50 * time.Millisecond)
			var c calls
			runStage(t, b, spec, func(_ context.Context, ev schemas.BlockReady) error {
				return tc.handler(c.add(ev.ULID))
			})
			ev := readyEvent("eu1")
			var payload any = ev
			if tc.data != nil {
				payload = tc.data(ev)
			}
			if raw, ok := payload.([]byte); ok {
				if _, err := b.js.Publish(testContext(t), b.Subject("block", schemas.EventReady, ev.Site, ev.ULID.String()), raw); err != nil {
					t.Fatal(err)
				}
			} else if err := b.PublishBlockEvent(testContext(t), schemas.EventReady, ev.Site, ev.ULID, payload); err != nil {
				t.Fatal(err)
			}

			var dls []DeadLetter
			waitFor(t, "the dead letter", func() bool {
				var err error
				dls, err = b.DeadLetters(context.Background(), "upload")
				return err == nil && len(dls) > 0
			})
			waitPending(t, b, "upload", 0)
			if len(dls) != 1 {
				t.Fatalf("got %d dead letters, want 1", len(dls))
			}
			if all, err := b.DeadLetters(context.Background(), ""); err != nil || len(all) != 1 {
				t.Errorf("dead letters of every stage = %d (%v), want 1", len(all), err)
			}
			dl := dls[0]
			origin := "blockflow.block.ready.eu1." + ev.ULID.String()
			if !strings.Contains(dl.Reason, tc.wantReason) || dl.Stage != "upload" || dl.OriginSubject != origin ||
				dl.OriginSeq != 1 || dl.Subject != "blockflow.dlq.upload."+ev.ULID.String() {
				t.Errorf("dead letter = %+v; want reason containing %q from %s", dl, tc.wantReason, origin)
			}
			if want := max(tc.wantCalls, 1); dl.Deliveries != uint64(want) {
				t.Errorf("deliveries = %d, want %d", dl.Deliveries, want)
			}
			if c.of(ev.ULID) != tc.wantCalls {
				t.Errorf("handler called %d times, want %d", c.of(ev.ULID), tc.wantCalls)
			}
			if got := testutil.ToFloat64(b.metrics.events.WithLabelValues("upload", resultDeadLetter)); got != 1 {
				t.Errorf("dead_letter events = %v, want 1", got)
			}
		})
	}
}

// A handler that outlives AckWait keeps its lease: no other worker gets the event.
func TestRunHeartbeatKeepsLongEventLeased(t *testing.T) {
	t.Parallel()
	e, b := newBus(t)
	other := connect(t, Config{URL: e.ClientURL()})
	spec := uploadSpec(b)
	spec.AckWait = time.Second
	spec.Slots = 2
	var c calls
	slow := func(_ context.Context, ev schemas.BlockReady) error {
		c.add(ev.ULID)
		time.Sleep(3 * time.Second)
		return nil
	}
	runStage(t, b, spec, slow)
	runStage(t, other, spec, slow)
	ev := readyEvent("eu1")
	publishReady(t, b, ev)
	waitFor(t, "the event handled", func() bool { return c.of(ev.ULID) >= 1 })
	waitPending(t, b, "upload", 0)
	if n := c.of(ev.ULID); n != 1 {
		t.Fatalf("the event was handled %d times, want 1", n)
	}
}

// A worker that dies with an event in hand (its connection closes without an ack) loses
// the lease; another process gets the event and handles it once.
func TestRunRedeliversWhenWorkerDies(t *testing.T) {
	t.Parallel()
	e, crashing := newBus(t)
	spec := uploadSpec(crashing)
	spec.AckWait = time.Second
	started := make(chan struct{})
	release := make(chan struct{})
	crashed := make(chan error, 1)
	go func() {
		crashed <- Run(context.Background(), crashing, spec, func(context.Context, schemas.BlockReady) error {
			close(started)
			<-release
			return nil
		})
	}()
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	ev := readyEvent("eu1")
	publishReady(t, crashing, ev)
	<-started
	crashing.nc.Close()

	healthy := connect(t, Config{URL: e.ClientURL()})
	var c calls
	runStage(t, healthy, spec, func(_ context.Context, ev schemas.BlockReady) error {
		c.add(ev.ULID)
		return nil
	})
	waitFor(t, "the redelivered event handled", func() bool { return c.of(ev.ULID) == 1 })
	waitPending(t, healthy, "upload", 0)

	close(release)
	select {
	case err := <-crashed:
		if err == nil {
			t.Error("Run on a closed connection returned nil")
		}
	case <-time.After(testTimeout):
		t.Error("Run on a closed connection did not return")
	}
	if n := c.of(ev.ULID); n != 1 {
		t.Errorf("handled %d times by the healthy worker, want 1", n)
	}
}

// Two processes on one durable share the stream: each event is handled once, by one of them.
func TestRunPoolSharesWork(t *testing.T) {
	t.Parallel()
	e, a := newBus(t)
	b := connect(t, Config{URL: e.ClientURL()})
	var (
		mu  sync.Mutex
		by  = map[string]int{}
		all calls
	)
	handler := func(name string) Handler[schemas.BlockReady] {
		return func(_ context.Context, ev schemas.BlockReady) error {
			all.add(ev.ULID)
			mu.Lock()
			by[name]++
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			return nil
		}
	}
	runStage(t, a, uploadSpec(a), handler("a"))
	runStage(t, b, uploadSpec(b), handler("b"))
	// Publish once both processes wait for events, so both are in the pool.
	waitFor(t, "two waiting pulls", func() bool {
		c, err := a.js.Consumer(context.Background(), StreamEvents, "upload")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	})
	var evs []schemas.BlockReady
	for range 10 {
		ev := readyEvent("eu1")
		evs = append(evs, ev)
		publishReady(t, a, ev)
	}
	waitFor(t, "every event handled", func() bool { return all.total() >= len(evs) })
	waitPending(t, a, "upload", 0)
	for _, ev := range evs {
		if n := all.of(ev.ULID); n != 1 {
			t.Errorf("event %s handled %d times", ev.ULID, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if by["a"] == 0 || by["b"] == 0 {
		t.Errorf("work was not shared: %v", by)
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	_, b := newBus(t)
	var c calls
	runStage(t, b, uploadSpec(b), func(_ context.Context, ev schemas.BlockReady) error {
		c.add(ev.ULID)
		return nil
	})
	before := time.Now()
	for range 3 {
		publishReady(t, b, readyEvent("eu1"))
	}
	waitFor(t, "first pass", func() bool { return c.total() == 3 })
	waitPending(t, b, "upload", 0)

	ctx := testContext(t)
	if err := b.ReplayFromSequence(ctx, "upload", 2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replay from seq 2", func() bool { return c.total() == 5 })
	waitPending(t, b, "upload", 0)

	seq, err := b.ReplayFromTime(ctx, "upload", before)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 1 {
		t.Errorf("replay from %s starts at seq %d, want 1", before, seq)
	}
	waitFor(t, "replay from time", func() bool { return c.total() == 8 })
	waitPending(t, b, "upload", 0)

	if _, err := b.Pending(ctx, "nosuchstage"); err == nil {
		t.Error("Pending of a missing consumer succeeded")
	}
}

// Run rides out a server restart: fetch errors are retried, not fatal.
func TestRunSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := startServer(t, EmbeddedOptions{StoreDir: dir})
	b := connect(t, Config{URL: e.ClientURL()})
	var c calls
	stop := runStage(t, b, uploadSpec(b), func(_ context.Context, ev schemas.BlockReady) error {
		c.add(ev.ULID)
		return nil
	})
	first := readyEvent("eu1")
	publishReady(t, b, first)
	waitFor(t, "the first event handled", func() bool { return c.of(first.ULID) == 1 })

	e.Shutdown()
	waitFor(t, "the client to notice", func() bool { return !b.nc.IsConnected() })
	port := b.nc.Servers()[0]
	restarted := startServer(t, EmbeddedOptions{StoreDir: dir, Port: portOf(t, port)})
	second := readyEvent("eu1")
	publishReady(t, b, second)
	waitFor(t, "the event published after the restart handled", func() bool { return c.of(second.ULID) == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if restarted.ClientURL() != e.ClientURL() {
		t.Errorf("restarted on %s, want %s", restarted.ClientURL(), e.ClientURL())
	}
}

func portOf(t testing.TB, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
