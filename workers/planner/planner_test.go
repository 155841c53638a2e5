package planner_test

import (
	"context"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/planner"
)

const testTimeout = 30 * time.Second

func newBus(t *testing.T) *bus.Bus {
	t.Helper()
	b, _ := testenv.StartBus(t)
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startPlanner runs a planner until the returned stop is called (or the test ends).
func startPlanner(t *testing.T, b *bus.Bus, name string, reg prometheus.Registerer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- planner.Run(ctx, planner.Options{
			Catalogue: b.Catalogue(), Queue: b, Leader: b.Lease(planner.LeaseName, name),
			Config: planner.Config{Ranges: []int64{2 * 3_600_000, 8 * 3_600_000}}, Registerer: reg,
		})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("planner %s: %v", name, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func queued(t *testing.T, b *bus.Bus) []schemas.CompactJob {
	t.Helper()
	data, err := b.QueuedJobs(context.Background(), schemas.JobCompact)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.CompactJob
	for _, d := range data {
		j, err := schemas.Decode[schemas.CompactJob](d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

// gauge returns the value of the gauge name in reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0 // not registered yet: Run has not started
}

// TestRunPublishesFromTheCatalogueWithOneLeader: two planners follow the catalogue; the
// one holding the lease publishes each job once; when it stops, the other takes over and
// plans new blocks.
func TestRunPublishesFromTheCatalogueWithOneLeader(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	const h = 3_600_000
	put := func(n int) {
		rec := schemas.BlockRecord{
			Version: schemas.Version, ULID: ulid.Make(), MinTime: int64(n) * 2 * h, MaxTime: int64(n+1) * 2 * h,
			Labels: map[string]string{"cluster": "eu"}, State: schemas.StateLive, Site: "s", Level: 1,
		}
		if err := b.Catalogue().Put(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	for n := range 5 {
		put(n)
	}

	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	stopA := startPlanner(t, b, "a", regA)
	waitFor(t, "a to lead", func() bool { return gauge(t, regA, "blockflow_planner_leader") == 1 })
	startPlanner(t, b, "b", regB)
	waitFor(t, "the first job queued", func() bool { return len(queued(t, b)) == 1 })
	if gauge(t, regB, "blockflow_planner_leader") != 0 {
		t.Fatal("b leads while a does")
	}

	// More blocks: a plans the next 8h range while the first job waits in the queue.
	for n := 5; n < 9; n++ {
		put(n)
	}
	waitFor(t, "the second job queued", func() bool { return len(queued(t, b)) == 2 })

	// a stops; b takes over with the queue as it is and plans what is new.
	stopA()
	waitFor(t, "b to lead", func() bool { return gauge(t, regB, "blockflow_planner_leader") == 1 })
	for n := 9; n < 13; n++ {
		put(n)
	}
	waitFor(t, "the third job queued", func() bool { return len(queued(t, b)) == 3 })
	jobs := queued(t, b)
	seen := map[ulid.ULID]bool{}
	for _, j := range jobs {
		if len(j.Inputs) != 4 {
			t.Errorf("job %s has %d inputs, want 4", j.ID, len(j.Inputs))
		}
		for _, in := range j.Inputs {
			if seen[in.ULID] {
				t.Errorf("block %s is in two queued jobs", in.ULID)
			}
			seen[in.ULID] = true
		}
	}
}
