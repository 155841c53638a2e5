package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

func blockIDs(metas []tsdb.BlockMeta) []ulid.ULID {
	ids := make([]ulid.ULID, len(metas))
	for i, m := range metas {
		ids[i] = m.ULID
	}
	return ids
}

// countAt is the instant query counting the synth series at the middle of block m.
func countAt(m tsdb.BlockMeta) promref.Query {
	return promref.Instant(`count({job="synth"})`, time.UnixMilli((m.MinTime+m.MaxTime)/2))
}

// testUploadWorkerKilledMidUpload kills the upload worker when a block's chunks and index
// are in the bucket but its meta.json is not, then restarts it: the block ends up in the
// bucket exactly once, and queryd shows each block whole or not at all.
func testUploadWorkerKilledMidUpload(t *testing.T, minio *testenv.MinIO) {
	c := newCluster(t, minio, "e2e-kill-upload")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	const series = 2000
	metas, err := synth.WriteBlocks(context.Background(), tsdbDir, synth.Spec{Series: series, Span: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	blocks := blockIDs(metas)

	// The worker reaches MinIO through a proxy that kills it as it sends the first
	// meta.json: the moment every other file of that block is committed.
	var worker atomic.Pointer[Process]
	killed := make(chan string, 1)
	var once sync.Once
	proxy := newS3Proxy(t, minio.Endpoint, func(r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/meta.json") {
			return false
		}
		fired := false
		once.Do(func() {
			worker.Load().Kill()
			// Path-style request: /<bucket>/<object>.
			_, object, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
			killed <- object
			fired = true
		})
		return fired
	})
	proxyConfig := c.writeFile("objstore-proxy.yml", strings.Replace(string(mustRead(t, c.objstoreFile)), minio.Endpoint, proxy, 1))

	queryd := c.queryd()
	worker.Store(c.uploadWorker(proxyConfig))
	c.sidecar(tsdbDir, externalLabels...)

	var object string
	select {
	case object = <-killed:
	case <-time.After(convergeTimeout):
		t.Fatal("the upload worker never sent a meta.json")
	}
	victim, err := ulid.ParseStrict(path.Dir(object))
	if err != nil {
		t.Fatalf("meta.json upload for %q: %v", object, err)
	}
	ctx := context.Background()
	for name, want := range map[string]bool{"chunks/000001": true, "index": true, "meta.json": false} {
		ok, err := c.bucket.Exists(ctx, path.Join(victim.String(), name))
		if err != nil {
			t.Fatal(err)
		}
		if ok != want {
			t.Fatalf("after the kill, %s/%s exists = %v, want %v (a partial upload)", victim, name, ok, want)
		}
	}
	victimMeta := metas[slices.Index(blocks, victim)]
	if v, err := instantValue(queryd.URL(), countAt(victimMeta)); err != nil || v != "" {
		t.Fatalf("queryd shows the partial block %s: count = %q, %v", victim, v, err)
	}

	worker.Load().Start()
	full := strconv.Itoa(series)
	waitFor(t, convergeTimeout, "every block uploaded and queryable", func() (bool, string) {
		for _, m := range metas {
			v, err := instantValue(queryd.URL(), countAt(m))
			if err != nil {
				return false, err.Error()
			}
			if v != "" && v != full {
				t.Fatalf("queryd shows part of block %s: %s of %d series", m.ULID, v, series)
			}
			if v == "" {
				return false, fmt.Sprintf("block %s not queryable yet", m.ULID)
			}
		}
		complete, partial, err := c.committed(ctx)
		if err != nil {
			return false, err.Error()
		}
		return sameULIDs(complete, blocks) && len(partial) == 0, fmt.Sprintf("committed %v, partial %v", complete, partial)
	})
	if listed := c.bucketLs(); !sameULIDs(listed, blocks) {
		t.Fatalf("bucket ls lists %v, want each of %v once", listed, blocks)
	}
}

// newS3Proxy serves a reverse proxy to the S3 endpoint target on loopback and returns its
// host:port. intercept sees each request first; when it returns true the request fails
// with 503 instead of reaching S3. The Host header is kept, so request signatures stay valid.
func newS3Proxy(t *testing.T, target string, intercept func(*http.Request) bool) string {
	t.Helper()
	to := &url.URL{Scheme: "http", Host: target}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(to)
		r.Out.Host = r.In.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept(r) {
			http.Error(w, "intercepted by the test", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// shipperFile reads the uploaded list of the sidecar's thanos.shipper.json.
func shipperFile(t *testing.T, tsdbDir string) []ulid.ULID {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tsdbDir, "thanos.shipper.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version  int         `json:"version"`
		Uploaded []ulid.ULID `json:"uploaded"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("thanos.shipper.json: %v: %s", err, data)
	}
	return f.Uploaded
}

// testSidecarRestart kills and restarts the sidecar after it shipped two blocks, then
// gives it a third: it ships only the third.
func testSidecarRestart(t *testing.T, minio *testenv.MinIO) {
	c := newCluster(t, minio, "e2e-sidecar-restart")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	spec := synth.Spec{Series: 50, Span: 4 * time.Hour}
	metas, err := synth.WriteBlocks(context.Background(), tsdbDir, spec)
	if err != nil {
		t.Fatal(err)
	}
	first := blockIDs(metas)

	worker := c.uploadWorker("")
	sidecar := c.sidecar(tsdbDir, externalLabels...)
	c.waitForBlocks(first)
	waitFor(t, convergeTimeout, "the shipper file to list the blocks", func() (bool, string) {
		got := shipperFile(t, tsdbDir)
		return sameULIDs(got, first), fmt.Sprintf("shipper file lists %v", got)
	})

	sidecar.Restart()
	// The same spec over a longer span keeps the two blocks and adds a third, written as
	// Prometheus cuts one (a temporary directory renamed into place).
	spec.Span = 6 * time.Hour
	metas, err = synth.WriteBlocks(context.Background(), tsdbDir, spec)
	if err != nil {
		t.Fatal(err)
	}
	all := blockIDs(metas)
	c.waitForBlocks(all)

	// The third block arriving means the restarted sidecar has looked at all three.
	waitFor(t, convergeTimeout, "the restarted sidecar to count its shipment", func() (bool, string) {
		n := sidecar.Metric(t, "blockflow_sidecar_blocks_shipped_total")
		if n > 1 {
			t.Fatalf("the restarted sidecar shipped %v blocks, want only the new one", n)
		}
		return n == 1, fmt.Sprintf("%v shipped", n)
	})
	waitFor(t, convergeTimeout, "the shipper file to list all blocks", func() (bool, string) {
		got := shipperFile(t, tsdbDir)
		return sameULIDs(got, all), fmt.Sprintf("shipper file lists %v", got)
	})
	waitFor(t, convergeTimeout, "the worker to count three uploads", func() (bool, string) {
		n := worker.Metric(t, `blockflow_upload_blocks_total{result="uploaded"}`)
		return n == 3, fmt.Sprintf("%v uploaded", n)
	})
	if n := worker.Metric(t, `blockflow_upload_blocks_total{result="duplicate"}`); n != 0 {
		t.Errorf("the worker saw %v blocks again", n)
	}
	if listed := c.bucketLs(); !sameULIDs(listed, all) {
		t.Fatalf("bucket ls lists %v, want each of %v once", listed, all)
	}
}

// testCorruptBlock puts a block with a truncated index first in the TSDB directory: it is
// dead-lettered with its reason and the blocks after it still ship.
func testCorruptBlock(t *testing.T, minio *testenv.MinIO) {
	c := newCluster(t, minio, "e2e-corrupt")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	metas, err := synth.WriteBlocks(context.Background(), tsdbDir, synth.Spec{Series: 50, Span: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := metas[0].ULID
	index := filepath.Join(tsdbDir, corrupt.String(), "index")
	st, err := os.Stat(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(index, st.Size()/2); err != nil {
		t.Fatal(err)
	}

	c.uploadWorker("")
	c.sidecar(tsdbDir, externalLabels...)
	c.waitForBlocks(blockIDs(metas[1:]))

	var line string
	waitFor(t, convergeTimeout, "the corrupt block in the DLQ", func() (bool, string) {
		lines := c.dlqLs()
		for _, l := range lines {
			if strings.Contains(l, corrupt.String()) {
				line = l
				return true, ""
			}
		}
		return false, fmt.Sprintf("dlq ls: %q", lines)
	})
	// stage, block, reason
	if fields := strings.Fields(line); !strings.Contains(line, "upload") || len(fields) < 3 {
		t.Errorf("DLQ line %q does not give stage upload, the block and a reason", line)
	}
	complete, partial, err := c.committed(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sameULIDs(complete, blockIDs(metas[1:])) || len(partial) != 0 {
		t.Errorf("bucket: committed %v, partial %v; want %v and nothing of %s", complete, partial, blockIDs(metas[1:]), corrupt)
	}
}
