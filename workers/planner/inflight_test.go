package planner

import (
	"context"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/catalogview"
	"github.com/blockflow/blockflow/schemas"
)

// queue records published jobs.
type queue struct{ published []schemas.CompactJob }

func (q *queue) PublishJob(_ context.Context, kind, group, id string, v any) error {
	q.published = append(q.published, v.(schemas.CompactJob))
	return nil
}

func (q *queue) QueuedJobs(context.Context, string) ([][]byte, error) { return nil, nil }

func rec(n uint64, mint, maxt int64) schemas.BlockRecord {
	return schemas.BlockRecord{
		Version: schemas.Version, ULID: ulid.MustNew(n, nil), MinTime: mint, MaxTime: maxt,
		Labels: map[string]string{"a": "b"}, State: schemas.StateLive, Site: "s",
	}
}

// TestPlanOnceNeverPlansAgainstAQueuedJob: a job is published once; while it is queued,
// no job that shares an input with it is published, even when a new plan differs; once
// its inputs are marked, the group is planned again.
func TestPlanOnceNeverPlansAgainstAQueuedJob(t *testing.T) {
	q := &queue{}
	p := &planner{
		o:    Options{Queue: q, Config: Config{Ranges: []int64{60, 180}}},
		log:  zerolog.Nop(),
		m:    newMetrics(nil),
		view: catalogview.New(),
	}
	for _, b := range []schemas.BlockRecord{rec(1, 0, 20), rec(2, 20, 40), rec(3, 40, 60), rec(4, 60, 80)} {
		p.view.Apply(b)
	}
	queued := map[string]schemas.CompactJob{}
	ctx := context.Background()
	if _, err := p.planOnce(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if len(q.published) != 1 || len(q.published[0].Inputs) != 3 {
		t.Fatalf("published %v, want one job of 3 blocks", q.published)
	}
	job := q.published[0]

	// Planning again publishes nothing new.
	if _, err := p.planOnce(ctx, queued); err != nil {
		t.Fatal(err)
	}
	// A block overlapping one of the job's inputs arrives: the plan is now a vertical
	// compaction of it with that input, which must wait for the queued job.
	p.view.Apply(rec(5, 10, 30))
	if _, err := p.planOnce(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if len(q.published) != 1 {
		t.Fatalf("published %d jobs while the first holds their inputs, want 1", len(q.published))
	}

	// The job is done: its inputs are marked, its output live. The overlap with the
	// output is planned now.
	byID := map[ulid.ULID]schemas.BlockRecord{}
	for _, b := range p.view.Snapshot() {
		byID[b.ULID] = b
	}
	for _, in := range job.Inputs {
		b := byID[in.ULID]
		b.State = schemas.StateMarked
		p.view.Apply(b)
	}
	out := rec(9, 0, 60)
	out.Sources = []ulid.ULID{ulid.MustNew(1, nil), ulid.MustNew(2, nil), ulid.MustNew(3, nil)}
	p.view.Apply(out)
	if _, err := p.planOnce(ctx, queued); err != nil {
		t.Fatal(err)
	}
	if len(queued) != 1 || len(q.published) != 2 {
		t.Fatalf("queued %d, published %d; want the finished job dropped and one new job", len(queued), len(q.published))
	}
	next := q.published[1]
	if len(next.Inputs) != 2 || next.Inputs[0].ULID != out.ULID || next.Inputs[1].ULID != ulid.MustNew(5, nil) {
		t.Errorf("second job %+v, want the output and the overlapping block", next.Inputs)
	}
}
