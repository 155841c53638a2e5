package compact_test

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/queryd/blockquery"
)

// localBlock is a block on local disk with its external labels, for a StoreAPI source.
type localBlock struct {
	*tsdb.Block
	ext labels.Labels
}

func (b localBlock) Labels() labels.Labels                 { return b.ext }
func (localBlock) Prepare(context.Context) (func(), error) { return func() {}, nil }

// blocksSource serves local blocks as a store gateway serves bucket blocks.
type blocksSource struct {
	blocks []localBlock
	q      *blockquery.Queryable[localBlock]
}

func newBlocksSource(blocks []localBlock) *blocksSource {
	s := &blocksSource{blocks: blocks}
	s.q = blockquery.NewQueryable(func(mint, maxt int64) []localBlock {
		var out []localBlock
		for _, b := range blocks {
			if b.MinTime() <= maxt && b.MaxTime() > mint {
				out = append(out, b)
			}
		}
		return out
	})
	return s
}

func (s *blocksSource) Info(context.Context) (storeapi.Info, error) {
	info := storeapi.Info{ComponentType: "store", MinTime: math.MaxInt64, MaxTime: math.MinInt64}
	seen := map[string]bool{}
	for _, b := range s.blocks {
		info.MinTime, info.MaxTime = min(info.MinTime, b.MinTime()), max(info.MaxTime, b.MaxTime()-1)
		if !seen[b.ext.String()] {
			seen[b.ext.String()] = true
			info.LabelSets = append(info.LabelSets, b.ext)
		}
	}
	return info, nil
}

func (s *blocksSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	return s.q.ChunkQuerier(mint, maxt)
}

// openBlocks opens the blocks in dirs with their meta.json's external labels.
func openBlocks(t testing.TB, dirs []string) []localBlock {
	t.Helper()
	var out []localBlock
	for _, d := range dirs {
		meta, err := block.ReadMetaFile(d)
		if err != nil {
			t.Fatal(err)
		}
		b, err := tsdb.OpenBlock(promslog.NewNopLogger(), d, chunkenc.NewPool(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		out = append(out, localBlock{Block: b, ext: labels.FromMap(meta.Thanos.Labels)})
	}
	return out
}

// dedupQueryable serves blocks over the StoreAPI on loopback and queries them as the
// Thanos Querier does, deduplicating by replicaLabels.
func dedupQueryable(t testing.TB, blocks []localBlock, replicaLabels []string) storage.Queryable {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := storeapi.NewGRPCServer()
	storeapi.NewServer(newBlocksSource(blocks)).Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	ep, err := storeapi.NewEndpoint(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	q := storeapi.NewQueryable([]*storeapi.Endpoint{ep}, storeapi.QueryableOptions{
		QueryOptions: storeapi.QueryOptions{ReplicaLabels: replicaLabels},
		Logger:       zerolog.Nop(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q.Refresh(ctx)
	return q
}

// query is one PromQL query: instant when step is zero.
type query struct {
	expr       string
	start, end int64
	step       time.Duration
}

// answers runs the queries against q and returns each result as text.
func answers(t testing.TB, q storage.Queryable, queries []query) []string {
	t.Helper()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	ctx := context.Background()
	var out []string
	for _, qq := range queries {
		var (
			pq  promql.Query
			err error
		)
		if qq.step == 0 {
			pq, err = engine.NewInstantQuery(ctx, q, nil, qq.expr, time.UnixMilli(qq.start))
		} else {
			pq, err = engine.NewRangeQuery(ctx, q, nil, qq.expr, time.UnixMilli(qq.start), time.UnixMilli(qq.end), qq.step)
		}
		if err != nil {
			t.Fatal(err)
		}
		res := pq.Exec(ctx)
		if res.Err != nil {
			t.Fatalf("%s: %v", qq.expr, res.Err)
		}
		out = append(out, res.Value.String())
		pq.Close()
	}
	return out
}
