package queryd

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// benchSeries is the size of the benchmark block: 10,000 series by default,
// BLOCKFLOW_BENCH_SERIES=100000 for the full size.
func benchSeries(b *testing.B) int {
	n := 10_000
	if v := os.Getenv("BLOCKFLOW_BENCH_SERIES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatalf("BLOCKFLOW_BENCH_SERIES: %v", err)
		}
	}
	return n
}

// benchBlock serves a 2h block of n synthetic series scraped every 15s from queryd, over
// HTTP and over the StoreAPI.
func benchBlock(b *testing.B, n int) (*harness, *storeapi.Client, tsdb.BlockMeta) {
	b.Helper()
	dir := b.TempDir()
	metas, err := synth.WriteBlocks(context.Background(), dir, synth.Spec{Series: n, Span: 2 * time.Hour})
	if err != nil || len(metas) != 1 {
		b.Fatalf("write block: %d blocks, %v", len(metas), err)
	}
	fs, err := objstore.NewFilesystem(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	rec := blocktest.Upload(b, fs, filepath.Join(dir, metas[0].ULID.String()), ext, nil)
	h := startWith(b, Options{Bucket: fs, Catalogue: blocktest.Static([]schemas.BlockRecord{rec}, nil)})
	return h, serveStoreAPI(b, h.srv.RegisterStoreAPI), metas[0]
}

// BenchmarkStoreAPISeries streams every series of a 2h block through queryd's StoreAPI
// (chunks from the bucket, index cached), as a Thanos Querier reads it.
func BenchmarkStoreAPISeries(b *testing.B) {
	n := benchSeries(b)
	_, c, meta := benchBlock(b, n)
	req := &storepb.SeriesRequest{
		MinTime: meta.MinTime, MaxTime: meta.MaxTime,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_RE, Name: "__name__", Value: ".+"}},
	}
	for b.Loop() {
		if got := countSeries(b, c, req); got != n {
			b.Fatalf("%d series, want %d", got, n)
		}
	}
	b.ReportMetric(float64(meta.Stats.NumSamples)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "series/s")
}

func countSeries(b *testing.B, c *storeapi.Client, req *storepb.SeriesRequest) int {
	stream, err := c.Store().Series(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		if resp.GetSeries() != nil {
			n++
		}
		n += len(resp.GetBatch().GetSeries())
	}
}

// BenchmarkStoreAPILabelValues asks for the values of a label of few values (instance) and
// one of many (id, a quarter of the series), as Grafana's variables do.
func BenchmarkStoreAPILabelValues(b *testing.B) {
	n := benchSeries(b)
	_, c, meta := benchBlock(b, n)
	for _, label := range []string{"instance", "id"} {
		b.Run(label, func(b *testing.B) {
			for b.Loop() {
				resp, err := c.Store().LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: label, Start: meta.MinTime, End: meta.MaxTime})
				if err != nil || len(resp.GetValues()) == 0 {
					b.Fatalf("%v, %v", resp, err)
				}
			}
		})
	}
}

// BenchmarkQueryHTTPvsStoreAPI runs the same range query through queryd's HTTP API and
// through a querier that reads queryd only over its StoreAPI (as a Thanos Querier does):
// the cost of the gRPC hop, the wire encoding and the client-side merge.
func BenchmarkQueryHTTPvsStoreAPI(b *testing.B) {
	n := benchSeries(b)
	h, c, meta := benchBlock(b, n)
	querier := startWith(b, Options{Catalogue: blocktest.Static(nil, nil), Endpoints: []string{c.Addr()}})
	querier.waitHealthy(b, 1)
	params := url.Values{
		"query": {`sum by (instance) (rate(synth_requests_total[5m]))`},
		"start": {strconv.FormatInt(meta.MinTime/1000, 10)},
		"end":   {strconv.FormatInt(meta.MaxTime/1000, 10)},
		"step":  {"60"},
	}
	for _, tc := range []struct {
		name string
		base string
	}{{"http", h.http.URL}, {"storeapi", querier.http.URL}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				resp, err := http.Get(tc.base + "/api/v1/query_range?" + params.Encode())
				if err != nil {
					b.Fatal(err)
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("HTTP %d, %v", resp.StatusCode, err)
				}
			}
		})
	}
}
