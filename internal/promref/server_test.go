package promref

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

// TestServer starts the reference Prometheus over promtool-made blocks next to blocks
// synth writes directly (other time ranges), and checks both are queryable.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus process")
	}
	dir := t.TempDir()
	blocks := filepath.Join(dir, "blocks")
	file := filepath.Join(dir, "metrics.om")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := synth.OpenMetrics(f, synth.OpenMetricsOptions{Span: 4 * time.Hour, Instances: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Bin(t, "promtool"), "tsdb", "create-blocks-from", "openmetrics", file, blocks)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
	now := time.Now()
	if _, err := synth.WriteDemoBlocks(context.Background(), blocks, now, 6*time.Hour); err != nil {
		t.Fatal(err)
	}

	srv := Start(t, Options{BlocksDir: blocks, ExternalLabels: map[string]string{"cluster": "ref"}})

	omTime := time.UnixMilli(stats.MaxTime)
	demoTime := now.Truncate(2 * time.Hour).Add(-time.Hour)
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Instant(`count({__name__=~".+"})`, omTime), strconv.Itoa(stats.Series)},
		{Instant(`count({job="test-api"})`, demoTime), "9"},
		// Counter resets are handled: the demo's rates stay positive.
		{Instant(`count(rate(request_count_total[5m]) > 0)`, demoTime), "6"},
	} {
		if got := scalarOf(t, srv.URL(), tc.q); got != tc.want {
			t.Errorf("%s = %s, want %s", tc.q, got, tc.want)
		}
	}

	start := time.UnixMilli(stats.MinTime)
	queries := []Query{
		Instant(`sum by (status) (rate(http_requests_total[5m]))`, omTime),
		Range(`histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[10m])))`, start, omTime, time.Minute),
		Range(`max_over_time(temperature_celsius[1h])`, start, omTime, 5*time.Minute),
		LabelNames(),
		LabelValues("status"),
		Series(start, omTime, `{job="api"}`),
	}
	if !Compare(t, srv.URL(), srv.URL(), queries, "cluster") {
		t.Fatal("a server differs from itself")
	}
	// The reference does not put its external labels into query results.
	if got := scalarOf(t, srv.URL(), Instant(`count({cluster="ref"})`, omTime)); got != "" {
		t.Errorf("external label in results: count = %q", got)
	}

	srv.Stop()
	if srv.running() {
		t.Fatal("still running after Stop")
	}
}

// scalarOf runs an instant query and returns the value of its single sample ("" if none).
func scalarOf(t *testing.T, base string, q Query) string {
	t.Helper()
	a, err := Fetch(base, q)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.Body, &resp); err != nil || resp.Status != "success" {
		t.Fatalf("%s: HTTP %d %s (%v)", q, a.Code, a.Body, err)
	}
	switch len(resp.Data.Result) {
	case 0:
		return ""
	case 1:
		return resp.Data.Result[0].Value[1].(string)
	default:
		t.Fatalf("%s: %d samples, want one", q, len(resp.Data.Result))
		return ""
	}
}
