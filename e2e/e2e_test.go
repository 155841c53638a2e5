package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

// externalLabels are the sidecar's --label flags in every test; Prometheus leaves them
// out of query results, so comparisons drop them from blockflow's answers.
var externalLabels = []string{"cluster=e2e", "replica=a"}

// TestE2E shares one MinIO among its subtests; each has its own bucket and JetStream server.
func TestE2E(t *testing.T) {
	needBinary(t)
	minio := testenv.StartMinIO(t)
	t.Run("QueryMatchesPrometheus", func(t *testing.T) { testQueryMatchesPrometheus(t, minio) })
	t.Run("UploadWorkerKilledMidUpload", func(t *testing.T) { testUploadWorkerKilledMidUpload(t, minio) })
	t.Run("SidecarRestartShipsNothingTwice", func(t *testing.T) { testSidecarRestart(t, minio) })
	t.Run("CorruptBlockIsDeadLettered", func(t *testing.T) { testCorruptBlock(t, minio) })
	t.Run("Outages", func(t *testing.T) { testOutages(t, minio) })
}

// testQueryMatchesPrometheus ships promtool-made blocks through sidecar, upload worker
// and queryd, and requires queryd to answer exactly as Prometheus over the same blocks.
func testQueryMatchesPrometheus(t *testing.T, minio *testenv.MinIO) {
	c := newCluster(t, minio, "e2e-query")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	stats := promtoolBlocks(t, tsdbDir, synth.OpenMetricsOptions{Span: 12 * time.Hour, Seed: 42})
	blocks := localBlocks(t, tsdbDir)
	if len(blocks) != 6 {
		t.Fatalf("promtool made %d blocks of 12h, want 6", len(blocks))
	}
	// The reference copies the blocks before the sidecar adds its shipper file.
	ref := promref.Start(t, promref.Options{BlocksDir: tsdbDir, ExternalLabels: map[string]string{"cluster": "e2e", "replica": "a"}})

	c.sidecar(tsdbDir, externalLabels...)
	c.uploadWorker("")
	queryd := c.queryd()
	c.waitForBlocks(blocks)
	if listed := c.bucketLs(); !sameULIDs(listed, blocks) {
		t.Fatalf("bucket ls lists %v, want %v", listed, blocks)
	}

	start, end := time.UnixMilli(stats.MinTime), time.UnixMilli(stats.MaxTime)
	// queryd learns of blocks from the catalogue: wait until every block answers, with a
	// point in each (promtool blocks start on the 2h boundaries of the data).
	waitFor(t, convergeTimeout, "queryd to serve every block", func() (bool, string) {
		vals, err := rangeValues(queryd.URL(), promref.Range(`count({__name__=~".+"})`, start.Add(time.Hour), end, 2*time.Hour))
		if err != nil {
			return false, err.Error()
		}
		want := strconv.Itoa(stats.Series)
		for _, v := range vals {
			if v != want {
				return false, fmt.Sprintf("series counts per block %v, want %s each", vals, want)
			}
		}
		return len(vals) == len(blocks), fmt.Sprintf("series counts per block %v", vals)
	})

	exprs := []string{
		`rate(http_requests_total[5m])`,
		`sum by (status) (rate(http_requests_total[5m]))`,
		`histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[10m])))`,
		`max_over_time(temperature_celsius[1h])`,
		`http_requests_total`,
		`resets(http_requests_total[3h])`,
		`sum(increase(request_duration_seconds_count[1h])) by (instance)`,
	}
	times := []time.Time{
		start.Add(time.Hour),
		start.Add(2 * time.Hour), // a block boundary
		start.Add(2*time.Hour + time.Millisecond),
		start.Add(6*time.Hour + 7*time.Second),
		end.Add(-time.Minute),
		end,
		end.Add(3 * time.Minute), // past the data, inside the lookback
		start.Add(-time.Hour),    // before the data
	}
	var queries []promref.Query
	for _, expr := range exprs {
		for _, at := range times {
			queries = append(queries, promref.Instant(expr, at))
		}
		queries = append(queries,
			promref.Range(expr, start, end, 5*time.Minute),
			// Across the block boundary at 4h, every minute.
			promref.Range(expr, start.Add(3*time.Hour), start.Add(5*time.Hour), time.Minute),
		)
	}
	queries = append(queries,
		promref.Range(`sum by (status) (rate(http_requests_total[5m]))`, start, end, time.Minute),
		promref.LabelNames(),
		promref.LabelValues("status"),
		promref.LabelValues("instance", `{job="api"}`),
		promref.Series(start, end, `{job="sensors"}`),
		// Bad input is refused the same way.
		promref.Instant(`rate(http_requests_total[5m]`, end),
		promref.Range(`up`, end, start, time.Minute),
	)
	promref.Compare(t, ref.URL(), queryd.URL(), queries, "cluster", "replica")

	// A stock Thanos Querier with queryd's StoreAPI as its only endpoint answers exactly
	// what a Thanos Querier answers over a stock Thanos sidecar next to the reference
	// Prometheus: queryd is a drop-in Thanos store. (Not what queryd answers itself: the
	// Querier's counter-adjusting iterator changes rate and resets at counter resets,
	// thanos#3644, whatever the store.)
	_, refStore := thanosSidecar(t, ref.URL(), ref.Dir())
	thanosRef := thanosQuerier(t, "thanos-query-sidecar", refStore)
	thanosQueryd := thanosQuerier(t, "thanos-query-queryd", c.querydGRPC)
	for _, tq := range []*Process{thanosRef, thanosQueryd} {
		waitFor(t, convergeTimeout, "a Thanos Querier to see its store", func() (bool, string) {
			v, err := instantValue(tq.URL(), promref.Instant(`count({__name__=~".+"})`, end.Add(-time.Minute)))
			if err != nil {
				return false, err.Error()
			}
			return v == strconv.Itoa(stats.Series), fmt.Sprintf("count %q", v)
		})
	}
	promref.Compare(t, thanosRef.URL(), thanosQueryd.URL(), queries)

	// Bad input: 400 with the API's error shape.
	for _, tc := range []struct {
		name string
		q    promref.Query
	}{
		{"bad PromQL", promref.Instant(`sum(rate(http_requests_total[5m])`, end)},
		{"start after end", promref.Range(`http_requests_total`, end, start, time.Minute)},
	} {
		a, err := promref.Fetch(queryd.URL(), tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var resp struct {
			Status, ErrorType, Error string
		}
		if err := json.Unmarshal(a.Body, &resp); err != nil {
			t.Errorf("%s: HTTP %d, body is not JSON: %s", tc.name, a.Code, a.Body)
			continue
		}
		if a.Code != http.StatusBadRequest || resp.Status != "error" || resp.ErrorType != "bad_data" || resp.Error == "" {
			t.Errorf("%s: HTTP %d %s, want 400 with status error, errorType bad_data and an error", tc.name, a.Code, a.Body)
		}
	}
}

// promtoolBlocks writes an OpenMetrics file and turns it into blocks in dir with the real
// promtool, as an operator backfilling history would.
func promtoolBlocks(t *testing.T, dir string, opts synth.OpenMetricsOptions) synth.Stats {
	t.Helper()
	file := filepath.Join(t.TempDir(), "metrics.om")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := synth.OpenMetrics(f, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Bin(t, "promtool"), "tsdb", "create-blocks-from", "openmetrics", file, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
	return stats
}

// apiResult is the data of a query answer, for the few checks that read values.
type apiResult struct {
	Status string `json:"status"`
	Data   struct {
		Result []struct {
			Value  [2]any   `json:"value"`
			Values [][2]any `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

func getResult(base string, q promref.Query) (apiResult, error) {
	var r apiResult
	a, err := promref.Fetch(base, q)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(a.Body, &r); err != nil || a.Code != http.StatusOK || r.Status != "success" {
		return r, fmt.Errorf("%s: HTTP %d: %.300s", q, a.Code, a.Body)
	}
	return r, nil
}

// instantValue returns the value of the single sample an instant query gives, "" when none.
func instantValue(base string, q promref.Query) (string, error) {
	r, err := getResult(base, q)
	switch {
	case err != nil:
		return "", err
	case len(r.Data.Result) == 0:
		return "", nil
	case len(r.Data.Result) > 1:
		return "", fmt.Errorf("%s: %d series, want one", q, len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return s, nil
}

// rangeValues returns the values of the single series a range query gives (none: empty).
func rangeValues(base string, q promref.Query) ([]string, error) {
	r, err := getResult(base, q)
	switch {
	case err != nil:
		return nil, err
	case len(r.Data.Result) == 0:
		return nil, nil
	case len(r.Data.Result) > 1:
		return nil, fmt.Errorf("%s: %d series, want one", q, len(r.Data.Result))
	}
	var vals []string
	for _, p := range r.Data.Result[0].Values {
		s, _ := p[1].(string)
		vals = append(vals, s)
	}
	return vals, nil
}
