package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

// TestHA runs the global view of an HA pair: two real Prometheus servers scrape the same
// target with external labels replica="a" and replica="b", each with a sidecar that ships
// its blocks and serves its data over the StoreAPI, and queryd reads its bucket and both
// sidecars with --query.replica-label replica. Queries answer as one replica does, not
// twice; seconds-old samples are visible; with one replica gone (first its Prometheus,
// then its sidecar too) queries answer from the other; with both gone, history still
// answers from the bucket.
func TestHA(t *testing.T) {
	needBinary(t)
	minio := testenv.StartMinIO(t)
	c := newCluster(t, minio, "e2e-ha")

	// The same history in both replicas, as blocks of their own (ULIDs differ), as two
	// Prometheus servers scraping the same targets would have written.
	hist := filepath.Join(c.dir, "history")
	metas, err := synth.WriteBlocks(context.Background(), hist, synth.Spec{Series: 40, Span: 4 * time.Hour, Seed: 3})
	if err != nil || len(metas) != 2 {
		t.Fatalf("history: %d blocks, %v", len(metas), err)
	}
	target := newHATarget(t)
	replicas := []string{"a", "b"}
	proms := map[string]*promref.Server{}
	sidecars := map[string]*Process{}
	var shipped []ulid.ULID
	var endpoints []string
	for _, r := range replicas {
		dir, ids := cloneBlocksNewIDs(t, hist, filepath.Join(c.dir, "blocks-"+r))
		shipped = append(shipped, ids...)
		proms[r] = promref.Start(t, promref.Options{
			BlocksDir:      dir,
			ExternalLabels: map[string]string{"cluster": "ha", "replica": r},
			ScrapeTargets:  []string{target.hostPort()},
			ScrapeInterval: time.Second,
		})
		grpcAddr := loopback(t)
		endpoints = append(endpoints, grpcAddr)
		// No --label: the external labels come from Prometheus, as for a Thanos sidecar.
		sidecars[r] = c.blockflow("sidecar-"+r, true, "sidecar", "--tsdb.path", proms[r].Dir(),
			"--prometheus.url", proms[r].URL(), "--nats.url", c.natsURL, "--grpc-address", grpcAddr)
	}
	c.uploadWorker("")
	querydGRPC := loopback(t)
	queryd := c.blockflow("queryd", true, "queryd", "--nats.url", c.natsURL, "--objstore.config-file", c.objstoreFile,
		"--grpc-address", querydGRPC, "--endpoint", endpoints[0], "--endpoint", endpoints[1], "--query.replica-label", "replica")

	// Both sidecars are healthy endpoints of queryd, and the shipped history is in queryd's
	// own blocks (its StoreAPI says so).
	waitFor(t, readyTimeout, "both sidecars healthy on /api/v1/stores", func() (bool, string) {
		return haStoresHealthy(queryd.URL(), endpoints)
	})
	c.waitForBlocks(shipped)
	histStart, histEnd := metas[0].MinTime, metas[len(metas)-1].MaxTime
	store, err := storeapi.Dial(querydGRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitFor(t, convergeTimeout, "queryd's StoreAPI to serve the shipped history", func() (bool, string) {
		info, err := store.Info(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return info.MinTime == histStart && len(info.LabelSets) == 2, fmt.Sprintf("%+v", info)
	})

	// History, deduplicated between the bucket's blocks and the sidecars' local blocks of
	// both replicas, answers exactly as one Prometheus.
	start, end := time.UnixMilli(histStart), time.UnixMilli(histEnd-1)
	history := []promref.Query{
		promref.Instant(`sum(rate(synth_requests_total[5m]))`, start.Add(90*time.Minute)),
		promref.Instant(`count({job="synth"})`, start.Add(3*time.Hour)),
		promref.Instant(`synth_temperature`, start.Add(2*time.Hour)),
		promref.Range(`sum by (instance) (rate(synth_bytes_total[5m]))`, start, end, 5*time.Minute),
		promref.Range(`max_over_time(synth_queue_depth[10m])`, start.Add(time.Hour), start.Add(3*time.Hour), time.Minute),
		promref.Series(start, end, `{__name__="synth_temperature"}`),
	}
	refAnswers := make([]promref.Answer, len(history))
	for i, q := range history {
		if refAnswers[i], err = promref.Fetch(proms["a"].URL(), q); err != nil {
			t.Fatal(err)
		}
		if body := string(refAnswers[i].Body); refAnswers[i].Code != http.StatusOK || strings.Contains(body, `"result":[]`) || strings.Contains(body, `"data":[]`) {
			t.Fatalf("%s: Prometheus a answers no data: %s", q, body)
		}
	}
	compareHistory := func(when string) {
		t.Helper()
		for i, q := range history {
			got, err := promref.Fetch(queryd.URL(), q)
			if err != nil {
				t.Fatalf("%s: %s: %v", when, q, err)
			}
			if diff, err := promref.Diff(q, refAnswers[i], got, "cluster"); err != nil || diff != "" {
				t.Errorf("%s: %s: answers differ (- Prometheus a, + queryd): %v\n%s", when, q, err, diff)
			}
		}
	}
	compareHistory("both replicas up")

	// Fresh data: a marker the target shows now is visible through queryd seconds later,
	// from the sidecars (Prometheus's head).
	target.marker.Store(7)
	waitFor(t, readyTimeout, "the new marker through queryd", func() (bool, string) {
		v, _, err := haValue(queryd.URL(), `marker`, time.Now(), nil)
		return err == nil && v == 7, fmt.Sprintf("%v, %v", v, err)
	})
	// Counters grow 10/s and 1/s: wait for some growth so doubling shows.
	waitFor(t, readyTimeout, "counters to grow", func() (bool, string) {
		v, _, err := haValue(proms["a"].URL(), `sum(http_requests_total)`, time.Now(), nil)
		return err == nil && v >= 200, fmt.Sprintf("%v, %v", v, err)
	})

	// One replica's answer, not twice, as Prometheus a (or b) itself answers.
	at := time.Now().Add(-2 * time.Second)
	checkLive := func(when string, ref *promref.Server, wantWarning bool) {
		t.Helper()
		for _, expr := range []string{
			`sum(http_requests_total)`,
			`sum by (status) (rate(http_requests_total{status="200"}[5m]))`,
			`sum by (status) (rate(http_requests_total{status="500"}[5m]))`,
		} {
			want, _, err := haValue(ref.URL(), expr, at, nil)
			if err != nil {
				t.Fatalf("%s: reference %s: %v", when, expr, err)
			}
			got, warns, err := haValue(queryd.URL(), expr, at, nil)
			if err != nil {
				t.Fatalf("%s: queryd %s: %v", when, expr, err)
			}
			// The replicas scrape at different moments: up to a scrape apart.
			if math.Abs(got-want) > 0.2*want {
				t.Errorf("%s: %s = %v through queryd, want about %v (one replica)", when, expr, got, want)
			}
			if (len(warns) > 0) != wantWarning {
				t.Errorf("%s: %s: warnings %q, want some: %v", when, expr, warns, wantWarning)
			}
		}
		if n, _, err := haValue(queryd.URL(), `count(http_requests_total)`, at, nil); err != nil || n != 2 {
			t.Errorf("%s: count(http_requests_total) = %v (%v), want 2", when, n, err)
		}
		if r, _, err := haValue(queryd.URL(), `sum(resets(http_requests_total[1m]))`, at, nil); err != nil || r != 0 {
			t.Errorf("%s: resets = %v (%v), want 0: a replica switch is not a counter reset", when, r, err)
		}
	}
	checkLive("both replicas up", proms["a"], false)
	both, _, err := haValue(queryd.URL(), `sum(http_requests_total)`, at, url.Values{"dedup": {"false"}})
	if want, _, _ := haValue(proms["a"].URL(), `sum(http_requests_total)`, at, nil); err != nil || math.Abs(both-2*want) > 0.2*2*want {
		t.Errorf("dedup=false: sum = %v (%v), want about twice %v", both, err, want)
	}

	// Prometheus a stops; its sidecar still answers Info, its reads fail: queryd answers
	// from replica b with a partial-response warning, or fails with partial_response=false.
	proms["a"].Stop()
	target.marker.Store(8)
	waitFor(t, readyTimeout, "the marker from replica b alone", func() (bool, string) {
		v, _, err := haValue(queryd.URL(), `marker`, time.Now(), nil)
		return err == nil && v == 8, fmt.Sprintf("%v, %v", v, err)
	})
	at = time.Now().Add(-2 * time.Second)
	checkLive("Prometheus a stopped", proms["b"], true)
	if _, _, err := haValue(queryd.URL(), `sum(http_requests_total)`, at, url.Values{"partial_response": {"false"}}); err == nil {
		t.Error("partial_response=false with Prometheus a stopped: no error")
	}

	// Its sidecar stops too: once queryd sees the endpoint gone, answers come from replica
	// b without warnings.
	sidecars["a"].Stop()
	waitFor(t, readyTimeout, "sidecar a unhealthy on /api/v1/stores", func() (bool, string) {
		ok, why := haStoresHealthy(queryd.URL(), endpoints[1:])
		healthyA, _ := haStoresHealthy(queryd.URL(), endpoints[:1])
		return ok && !healthyA, why
	})
	at = time.Now().Add(-2 * time.Second)
	checkLive("replica a gone", proms["b"], false)
	compareHistory("replica a gone")

	// Replica b goes too: history answers from the bucket alone.
	proms["b"].Stop()
	sidecars["b"].Stop()
	waitFor(t, readyTimeout, "both sidecars unhealthy", func() (bool, string) {
		a, _ := haStoresHealthy(queryd.URL(), endpoints[:1])
		b, why := haStoresHealthy(queryd.URL(), endpoints[1:])
		return !a && !b, why
	})
	compareHistory("both replicas gone")
}

// haTarget is what both replicas scrape: counters that grow 10/s and 1/s from the test's
// start (both replicas see the same function of time) and a marker gauge the test sets.
type haTarget struct {
	srv    *httptest.Server
	marker atomic.Int64
}

func newHATarget(t *testing.T) *haTarget {
	tg := &haTarget{}
	start := time.Now()
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := time.Since(start).Seconds()
		fmt.Fprintf(w, "# TYPE http_requests_total counter\nhttp_requests_total{status=\"200\"} %d\nhttp_requests_total{status=\"500\"} %d\n",
			int64(10*s), int64(s))
		fmt.Fprintf(w, "# TYPE marker gauge\nmarker %d\n", tg.marker.Load())
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *haTarget) hostPort() string { return strings.TrimPrefix(tg.srv.URL, "http://") }

// cloneBlocksNewIDs copies the blocks of src into dst, each under a new ULID, and returns
// dst and the new ULIDs.
func cloneBlocksNewIDs(t *testing.T, src, dst string) (string, []ulid.ULID) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ulid.ULID
	for _, e := range entries {
		if _, err := ulid.ParseStrict(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		id := ulid.Make()
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, id.String())
		if err := os.CopyFS(to, os.DirFS(from)); err != nil {
			t.Fatal(err)
		}
		// meta.json names the block: its ulid and, at level 1, its only source.
		var meta map[string]any
		if err := json.Unmarshal(mustRead(t, filepath.Join(to, "meta.json")), &meta); err != nil {
			t.Fatal(err)
		}
		meta["ulid"] = id.String()
		meta["compaction"].(map[string]any)["sources"] = []string{id.String()}
		data, err := json.Marshal(meta)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, "meta.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return dst, ids
}

// haValue runs an instant query whose answer is one sample, at t, and returns its value
// and the answer's warnings; an error answer (or not one sample) is an error.
func haValue(base, expr string, t time.Time, extra url.Values) (float64, []string, error) {
	q := promref.Instant(expr, t)
	for k, v := range extra {
		q.Params[k] = v
	}
	a, err := promref.Fetch(base, q)
	if err != nil {
		return 0, nil, err
	}
	var r struct {
		Status   string   `json:"status"`
		Error    string   `json:"error"`
		Warnings []string `json:"warnings"`
		Data     struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(a.Body, &r); err != nil {
		return 0, nil, fmt.Errorf("%s: HTTP %d: %s", q, a.Code, a.Body)
	}
	if r.Status != "success" {
		return 0, r.Warnings, fmt.Errorf("%s: HTTP %d: %s", q, a.Code, r.Error)
	}
	if len(r.Data.Result) != 1 {
		return 0, r.Warnings, fmt.Errorf("%s: %d samples, want 1", q, len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	return v, r.Warnings, err
}

// haStoresHealthy reports whether /api/v1/stores lists every one of addrs as a healthy
// sidecar.
func haStoresHealthy(base string, addrs []string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, base+"/api/v1/stores")
	if err != nil || code != http.StatusOK {
		return false, fmt.Sprintf("HTTP %d, %v", code, err)
	}
	var r struct {
		Data map[string][]struct {
			Name    string `json:"name"`
			Healthy bool   `json:"healthy"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return false, err.Error()
	}
	healthy := map[string]bool{}
	for _, st := range r.Data["sidecar"] {
		healthy[st.Name] = st.Healthy
	}
	for _, a := range addrs {
		if !healthy[a] {
			return false, string(body)
		}
	}
	return true, string(body)
}
