package upload_test

import (
	"context"
	"testing"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

// BenchmarkUploadWorker measures one block.ready end to end through the worker: download
// from an in-memory staging store, verification of every series and chunk, upload to a
// filesystem bucket, catalogue and event. MB/s is of block bytes.
func BenchmarkUploadWorker(b *testing.B) {
	ctx := context.Background()
	e := newEnv(b)
	dir := blocktest.Write(b, e.blocksDir, blocktest.Spec{Series: 10_000, Samples: 240})
	ev := e.stage(b, dir, schemas.ProducerSidecar)
	staged := e.staging.Snapshot()
	b.SetBytes(ship.Size(ev))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		e.staging.Restore(staged)
		if err := block.Delete(ctx, e.bkt, ev.ULID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := e.worker.Handle(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
