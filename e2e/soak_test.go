package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/internal/testenv"
)

// TestSoak keeps blocks arriving for BLOCKFLOW_SOAK_DURATION (default 10m) while it
// SIGKILLs and restarts upload workers, the sidecar and queryd, and restarts NATS, at
// random; in the end every block is in the bucket exactly once, queryable, and nothing is
// dead-lettered. Run with `go tool task soak` (BLOCKFLOW_SOAK=1).
func TestSoak(t *testing.T) {
	if os.Getenv("BLOCKFLOW_SOAK") == "" {
		t.Skip("set BLOCKFLOW_SOAK=1 (go tool task soak)")
	}
	needBinary(t)
	duration := 10 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("BLOCKFLOW_SOAK_DURATION")); err == nil {
		duration = d
	}
	minio := testenv.StartMinIO(t)
	c := newCluster(t, minio, "soak")
	tsdbDir := filepath.Join(c.dir, "prometheus")
	const series = 500

	queryd := c.queryd()
	workers := []*Process{c.blockflow("upload-1", true, "worker", "upload", "--nats.url", c.natsURL,
		"--objstore.config-file", c.objstoreFile, "--ack-wait", "5s"),
		c.blockflow("upload-2", true, "worker", "upload", "--nats.url", c.natsURL,
			"--objstore.config-file", c.objstoreFile, "--ack-wait", "5s")}
	sidecar := c.sidecar(tsdbDir, externalLabels...)
	victims := append([]*Process{sidecar, queryd, c.nats}, workers...)

	rng := rand.New(rand.NewPCG(1, 2))
	var all []tsdb.BlockMeta
	start := synth.DefaultStart
	deadline := time.Now().Add(duration)
	for i := 0; time.Now().Before(deadline); i++ {
		metas, err := synth.WriteBlocks(context.Background(), tsdbDir,
			synth.Spec{Series: series, Start: start.Add(time.Duration(i) * 2 * time.Hour), Span: 2 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, metas...)
		time.Sleep(time.Duration(1+rng.IntN(3)) * time.Second)
		if rng.IntN(3) == 0 {
			v := victims[rng.IntN(len(victims))]
			t.Logf("killing %s after block %d", v.name, i)
			v.Kill()
			time.Sleep(time.Duration(rng.IntN(5)) * time.Second)
			v.Start()
		}
	}
	t.Logf("%d blocks written; waiting for the pipeline to settle", len(all))

	full := strconv.Itoa(series)
	waitFor(t, 10*time.Minute, "every block uploaded once and queryable", func() (bool, string) {
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
		t.Fatalf("bucket ls lists %d blocks, want each of %d once", len(listed), len(all))
	}
	if dl := c.dlqLs(); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}
