package storeapi

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync/atomic"
	"testing"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"google.golang.org/grpc"

	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// tsdbSource serves a real Prometheus TSDB with external labels, as the sidecar will.
type tsdbSource struct {
	db        *tsdb.DB
	ext       labels.Labels
	component string
	ready     atomic.Bool
}

func newTSDBSource(db *tsdb.DB, ext labels.Labels) *tsdbSource {
	s := &tsdbSource{db: db, ext: ext, component: "sidecar"}
	s.ready.Store(true)
	return s
}

func (s *tsdbSource) Info(context.Context) (Info, error) {
	if !s.ready.Load() {
		return Info{}, errors.New("initial load not done")
	}
	mint, maxt := int64(math.MaxInt64), int64(math.MinInt64)
	for _, b := range s.db.Blocks() {
		mint, maxt = min(mint, b.Meta().MinTime), max(maxt, b.Meta().MaxTime-1)
	}
	if h := s.db.Head(); h.NumSeries() > 0 {
		mint, maxt = min(mint, h.MinTime()), max(maxt, h.MaxTime())
	}
	return Info{
		ComponentType: s.component,
		LabelSets:     []labels.Labels{s.ext},
		MinTime:       mint,
		MaxTime:       maxt,
		TSDBInfos:     []TSDBInfo{{Labels: s.ext, MinTime: mint, MaxTime: maxt}},
	}, nil
}

func (s *tsdbSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	q, err := s.db.ChunkQuerier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return WithExternalLabels(q, s.ext), nil
}

func openDB(tb testing.TB, dir string) *tsdb.DB {
	tb.Helper()
	db, err := tsdb.Open(dir, promslog.NewNopLogger(), nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// appendFloats appends n samples to lset, every step ms from start, valued value(i).
func appendFloats(tb testing.TB, db *tsdb.DB, lset labels.Labels, start, step int64, n int, value func(i int) float64) {
	tb.Helper()
	app := db.Appender(context.Background())
	for i := range n {
		if _, err := app.Append(0, lset, start+int64(i)*step, value(i)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		tb.Fatal(err)
	}
}

func constant(v float64) func(int) float64 { return func(int) float64 { return v } }

// startServer serves src on a random loopback port and returns the address.
func startServer(tb testing.TB, src Source, opts ...grpc.ServerOption) (string, *grpc.Server) {
	tb.Helper()
	g := NewGRPCServer(opts...)
	NewServer(src).Register(g)
	return serve(tb, g), g
}

func dial(tb testing.TB, addr string, opts ...grpc.DialOption) *Client {
	tb.Helper()
	c, err := Dial(addr, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// seriesResult is a Series stream as received.
type seriesResult struct {
	series   []*storepb.Series
	frames   []int // series per frame; 0 for a series frame, n for a batch of n
	warnings []string
}

func callSeries(ctx context.Context, c *Client, req *storepb.SeriesRequest) (seriesResult, error) {
	stream, err := c.Store().Series(ctx, req)
	if err != nil {
		return seriesResult{}, err
	}
	var res seriesResult
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if err != nil {
			return res, err
		}
		switch r := resp.GetResult().(type) {
		case *storepb.SeriesResponse_Series:
			res.series = append(res.series, r.Series)
			res.frames = append(res.frames, 0)
		case *storepb.SeriesResponse_Batch:
			res.series = append(res.series, r.Batch.GetSeries()...)
			res.frames = append(res.frames, len(r.Batch.GetSeries()))
		case *storepb.SeriesResponse_Warning:
			res.warnings = append(res.warnings, r.Warning)
		}
	}
}

func mustSeries(tb testing.TB, c *Client, req *storepb.SeriesRequest) seriesResult {
	tb.Helper()
	res, err := callSeries(context.Background(), c, req)
	if err != nil {
		tb.Fatalf("series: %v", err)
	}
	return res
}

func seriesLabels(ss []*storepb.Series) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = LabelsFromProto(s.GetLabels()).String()
	}
	return out
}

func eq(name, value string) *storepb.LabelMatcher {
	return &storepb.LabelMatcher{Type: storepb.LabelMatcher_EQ, Name: name, Value: value}
}

// serve serves g on a random loopback port and returns the address.
func serve(tb testing.TB, g *grpc.Server) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	tb.Cleanup(g.Stop)
	return lis.Addr().String()
}
