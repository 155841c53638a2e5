package storeapi

import (
	"context"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"

	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/internal/storeapi/snappy"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// BenchmarkSeries streams a block of 10k series x 240 samples (2 chunks each) from a real
// TSDB block over loopback gRPC and reports samples/s as received by the client.
func BenchmarkSeries(b *testing.B) {
	dir := b.TempDir()
	spec := blocktest.Spec{Series: 10_000, Samples: 240, Metric: "bench"}
	blocktest.Write(b, dir, spec)
	db := openDB(b, dir)
	if len(db.Blocks()) != 1 {
		b.Fatalf("%d blocks loaded, want 1", len(db.Blocks()))
	}
	addr, _ := startServer(b, newTSDBSource(db, labels.FromStrings("cluster", "bench", "replica", "0")))

	for _, bc := range []struct {
		name  string
		batch int64
		opts  []grpc.DialOption
	}{
		{"batch=1", 1, nil},
		{"batch=64", 64, nil},
		{"batch=64,snappy", 64, []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.UseCompressor(snappy.Name))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := dial(b, addr, bc.opts...)
			req := &storepb.SeriesRequest{
				MinTime: 0, MaxTime: math.MaxInt64, ResponseBatchSize: bc.batch,
				WithoutReplicaLabels: []string{"replica"},
				Matchers:             []*storepb.LabelMatcher{eq("__name__", "bench")},
			}
			var samples, series int
			for b.Loop() {
				res, err := callSeries(context.Background(), c, req)
				if err != nil {
					b.Fatal(err)
				}
				series += len(res.series)
				for _, s := range res.series {
					for _, ch := range s.GetChunks() {
						m, err := ChunkFromProto(ch)
						if err != nil {
							b.Fatal(err)
						}
						samples += m.Chunk.NumSamples()
					}
				}
			}
			if series != b.N*spec.Series || samples != b.N*spec.Series*spec.Samples {
				b.Fatalf("received %d series, %d samples in %d runs", series, samples, b.N)
			}
			b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(series)/b.Elapsed().Seconds(), "series/s")
		})
	}
}
