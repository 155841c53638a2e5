package queryd

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/blockflow/blockflow/queryd/internal/blocktest"
)

// TestMatchesPrometheusAPI runs the real Prometheus (the go.mod version) on the same
// blocks and asks both the same questions: for answers without external labels, status
// and body must be byte for byte the same.
func TestMatchesPrometheusAPI(t *testing.T) {
	bin := filepath.Join(os.Getenv("HOME"), ".cache", "blockflow", "bin", "prometheus")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("prometheus is not installed (scripts/test-deps.sh): %v", err)
	}
	f := newFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	promURL := runPrometheus(t, bin, f.localDir)

	for _, tc := range []struct {
		path   string
		params url.Values
	}{
		{"/api/v1/query", url.Values{"query": {`sum by (job) (rate(counter[5m]))`}, "time": {"7300"}}},
		{"/api/v1/query", url.Values{"query": {`sum(hist)`}, "time": {"7200.5"}}},
		{"/api/v1/query", url.Values{"query": {`histogram_quantile(0.9, sum(rate(hist[5m])))`}, "time": {"1970-01-01T02:01:40.123Z"}}},
		{"/api/v1/query", url.Values{"query": {`max without (cluster, replica) (counter)`}, "time": {"7215"}}},
		{"/api/v1/query", url.Values{"query": {`1+1`}, "time": {"100"}}},
		{"/api/v1/query", url.Values{"query": {`"text"`}, "time": {"100.25"}}},
		{"/api/v1/query", url.Values{"query": {`scalar(sum(counter)) / 1e9`}, "time": {"3600"}}},
		{"/api/v1/query", url.Values{"query": {`vector(1e-7) or label_replace(vector(1e22), "x", "y", "", "")`}, "time": {"3600"}}},
		{"/api/v1/query", url.Values{"query": {`topk(2, sum by (i) (counter))`}, "time": {"7200"}, "limit": {"1"}}},
		{"/api/v1/query_range", url.Values{"query": {`sum by (job) (increase(counter[10m]))`}, "start": {"0"}, "end": {"14400"}, "step": {"600"}}},
		{"/api/v1/query_range", url.Values{"query": {`sum(counter)`}, "start": {"7000.5"}, "end": {"7300"}, "step": {"15.5"}}},
		{"/api/v1/query_range", url.Values{"query": {`sum(rate(hist[5m]))`}, "start": {"3000"}, "end": {"3600"}, "step": {"1m"}}},
		{"/api/v1/query_range", url.Values{"query": {`avg(avg_over_time(counter[10m:]))`}, "start": {"3000"}, "end": {"3600"}, "step": {"5m"}}},
		{"/api/v1/label/job/values", nil},
		{"/api/v1/label/i/values", url.Values{"match[]": {`hist`}, "start": {"0"}, "end": {"100"}}},
		{"/api/v1/label/job/values", url.Values{"limit": {"2"}}},
		{"/api/v1/metadata", nil},
		// Errors.
		{"/api/v1/query", url.Values{"query": {`sum(`}}},
		{"/api/v1/query", url.Values{"query": {`1`}, "time": {"yesterday"}}},
		{"/api/v1/query", url.Values{"query": {`1`}, "timeout": {"-1s"}}},
		{"/api/v1/query", url.Values{"query": {`max without (cluster, replica) (counter) / on(job) sum without (cluster, replica) (counter)`}, "time": {"60"}}},
		{"/api/v1/query_range", url.Values{"query": {`1`}, "start": {"10"}, "end": {"5"}, "step": {"1"}}},
		{"/api/v1/query_range", url.Values{"query": {`1`}, "start": {"0"}, "end": {"5"}, "step": {"0"}}},
		{"/api/v1/query_range", url.Values{"query": {`1`}, "start": {"0"}, "end": {"5"}, "step": {"x"}}},
		{"/api/v1/query_range", url.Values{"query": {`1`}, "start": {"0"}, "end": {"100000"}, "step": {"1"}}},
		{"/api/v1/series", nil},
		{"/api/v1/series", url.Values{"match[]": {`{a=""}`}}},
		{"/api/v1/labels", url.Values{"match[]": {`{`}}},
		{"/api/v1/label/job/values", url.Values{"limit": {"-5"}}},
	} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if method == http.MethodPost && (tc.path == "/api/v1/label/job/values" || tc.path == "/api/v1/metadata") {
				continue
			}
			wantCode, want := send(t, method, promURL+tc.path, tc.params)
			gotCode, got := send(t, method, h.http.URL+tc.path, tc.params)
			if gotCode != wantCode || got != want {
				t.Errorf("%s %s %v:\ngot  %d %s\nwant %d %s", method, tc.path, tc.params, gotCode, got, wantCode, want)
			}
		}
	}
}

func send(t *testing.T, method, u string, params url.Values) (int, string) {
	t.Helper()
	var resp *http.Response
	var err error
	if method == http.MethodGet {
		resp, err = http.Get(u + "?" + params.Encode())
	} else {
		resp, err = http.PostForm(u, params)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// runPrometheus serves a copy of the blocks in dir, without scraping or compacting, and
// returns its URL once it is ready.
func runPrometheus(t *testing.T, bin, dir string) string {
	t.Helper()
	data := t.TempDir()
	if err := os.CopyFS(data, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(data, "wal"))
	cfg := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 15s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+data,
		"--storage.tsdb.retention.time=100000d",
		"--storage.tsdb.min-block-duration=2h",
		"--storage.tsdb.max-block-duration=2h",
		"--web.listen-address="+addr,
	)
	logs, err := os.Create(filepath.Join(t.TempDir(), "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logs.Close()
	})
	u := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(u + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return u
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logs.Name())
			t.Fatalf("prometheus did not get ready: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
