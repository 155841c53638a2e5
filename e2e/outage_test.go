package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

// outage is how long S3 and NATS stay dead in testOutages: long enough for several retries
// with backoff, short enough for CI.
const outage = 20 * time.Second

// testOutages takes S3 away while blocks arrive, then NATS: each comes back and every
// block ends up in the bucket exactly once and queryable, with nothing dead-lettered.
func testOutages(t *testing.T, minio *testenv.MinIO) {
	c := newCluster(t, minio, "e2e-outages")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	const series = 300
	start := synth.DefaultStart

	// Every S3 request of the upload worker fails with 503 while down is set.
	var down atomic.Bool
	proxy := newS3Proxy(t, minio.Endpoint, func(*http.Request) bool { return down.Load() })
	proxyConfig := c.writeFile("objstore-proxy.yml", strings.Replace(string(mustRead(t, c.objstoreFile)), minio.Endpoint, proxy, 1))

	queryd := c.queryd()
	c.uploadWorker(proxyConfig)
	c.sidecar(tsdbDir, externalLabels...)

	writeBlocks := func(from time.Time, span time.Duration) []tsdb.BlockMeta {
		metas, err := synth.WriteBlocks(context.Background(), tsdbDir, synth.Spec{Series: series, Start: from, Span: span})
		if err != nil {
			t.Fatal(err)
		}
		return metas
	}
	var all []tsdb.BlockMeta
	waitQueryable := func(what string) {
		full := strconv.Itoa(series)
		waitFor(t, convergeTimeout, what, func() (bool, string) {
			for _, m := range all {
				v, err := instantValue(queryd.URL(), countAt(m))
				if err != nil {
					return false, err.Error()
				}
				if v != full {
					return false, fmt.Sprintf("block %s: count %q", m.ULID, v)
				}
			}
			return true, ""
		})
		if listed := c.bucketLs(); !sameULIDs(listed, blockIDs(all)) {
			t.Fatalf("bucket ls lists %v, want each of %v once", listed, blockIDs(all))
		}
		if dl := c.dlqLs(); len(dl) != 0 {
			t.Fatalf("dead letters after %s: %v", what, dl)
		}
	}

	t.Run("S3", func(t *testing.T) {
		down.Store(true)
		all = append(all, writeBlocks(start, 4*time.Hour)...)
		time.Sleep(outage)
		down.Store(false)
		waitQueryable("every block uploaded after S3 came back")
	})
	t.Run("NATS", func(t *testing.T) {
		c.nats.Stop()
		all = append(all, writeBlocks(start.Add(4*time.Hour), 4*time.Hour)...)
		time.Sleep(outage)
		c.nats.Start()
		waitQueryable("every block uploaded after NATS came back")
	})
}
