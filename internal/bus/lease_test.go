package bus

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockflow/blockflow/schemas"
)

// leader runs l.Lead in the background and reports whether its fn is running.
type leader struct {
	running atomic.Bool
	leads   atomic.Int32
	err     error
	done    chan struct{} // closed when Lead has returned err
	release chan struct{} // closing it makes fn return and the leader leave Lead
}

func (ld *leader) wait() error {
	<-ld.done
	return ld.err
}

func startLeader(t *testing.T, l *Lease) *leader {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &leader{done: make(chan struct{}), release: make(chan struct{})}
	go func() {
		defer close(ld.done)
		ld.err = l.Lead(ctx, func(ctx context.Context) error {
			ld.running.Store(true)
			ld.leads.Add(1)
			defer ld.running.Store(false)
			select {
			case <-ctx.Done():
			case <-ld.release:
				// Hand over: the other contender may take it now; leave Lead.
				cancel()
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		_ = ld.wait()
	})
	return ld
}

func TestLeaseOneLeaderAndHandOver(t *testing.T) {
	_, b := newBus(t)
	a := startLeader(t, b.Lease("test-role", "a"))
	waitFor(t, "a leads", a.running.Load)
	c := startLeader(t, b.Lease("test-role", "c"))

	// c stands by as long as a holds the lease (a renews it meanwhile).
	time.Sleep(leaseRenewEvery + LeaseTTL/20)
	if c.running.Load() {
		t.Fatal("two leaders at once")
	}

	// a steps down: c takes over within a poll, well before the lease could expire.
	close(a.release)
	if err := a.wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c leads", c.running.Load)
	if a.running.Load() {
		t.Fatal("a still leads")
	}
}

func TestLeaseLostWhenTakenOver(t *testing.T) {
	_, b := newBus(t)
	l := b.Lease("test-lost", "a")
	a := startLeader(t, l)
	waitFor(t, "a leads", a.running.Load)

	// Somebody removes the key (as its expiry would): a's next renewal fails, its fn
	// ends, and it competes again and wins.
	if err := l.kv.Delete(testContext(t), "test-lost"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a leads a second time", func() bool { return a.leads.Load() >= 2 && a.running.Load() })
}

func TestQueuedJobs(t *testing.T) {
	_, b := newBus(t)
	ctx := testContext(t)
	for i, kind := range []string{"compact", "compact", "downsample", "compact"} {
		job := map[string]any{"n": i}
		if err := b.PublishJob(ctx, kind, "0@123", kind+string(rune('a'+i)), job); err != nil {
			t.Fatal(err)
		}
	}
	// A repeated job id is queued once.
	if err := b.PublishJob(ctx, "compact", "0@123", "compacta", map[string]any{"n": 0}); err != nil {
		t.Fatal(err)
	}
	jobs, err := b.QueuedJobs(ctx, "compact")
	if err != nil {
		t.Fatal(err)
	}
	if got := numbers(t, jobs); len(got) != 3 || got[0] != 0 || got[1] != 1 || got[2] != 3 {
		t.Fatalf("queued compact jobs = %v, want [0 1 3]", got)
	}

	// A handled job leaves the queue; one being handled stays.
	inHandler := make(chan struct{})
	finish := make(chan struct{})
	var calls atomic.Int32
	stop := runStage(t, b, ConsumerSpec{Stream: StreamJobs, Durable: "compact", FilterSubjects: []string{b.JobFilter("compact")}},
		func(ctx context.Context, j testJob) error {
			if calls.Add(1) == 1 {
				return nil
			}
			close(inHandler)
			<-finish
			return errors.New("not now")
		})
	<-inHandler
	jobs, err = b.QueuedJobs(ctx, "compact")
	if err != nil {
		t.Fatal(err)
	}
	if got := numbers(t, jobs); len(got) != 2 {
		t.Fatalf("queued compact jobs after one was handled = %v, want 2 (one in a handler)", got)
	}
	close(finish)
	_ = stop()
}

type testJob struct {
	N int `json:"n"`
}

func (testJob) Validate() error { return nil }

var _ schemas.Validator = testJob{}

func numbers(t *testing.T, jobs [][]byte) []int {
	t.Helper()
	var out []int
	for _, d := range jobs {
		var j testJob
		if err := json.Unmarshal(d, &j); err != nil {
			t.Fatal(err)
		}
		out = append(out, j.N)
	}
	return out
}
