package compact_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/compact"
)

// The test binary doubles as a compaction worker process, so a test can kill one with
// SIGKILL mid-job: with helperEnv set, TestMain runs the worker instead of the tests.
const (
	helperEnv       = "BLOCKFLOW_COMPACT_WORKER"
	helperURLEnv    = "BLOCKFLOW_COMPACT_NATS_URL"
	helperBucketEnv = "BLOCKFLOW_COMPACT_BUCKET"
	helperDataEnv   = "BLOCKFLOW_COMPACT_DATA"
	// helperStallEnv names an object the worker must never finish writing: the worker
	// creates helperSignalEnv's file and hangs instead, waiting to be killed.
	helperStallEnv  = "BLOCKFLOW_COMPACT_STALL_AT"
	helperSignalEnv = "BLOCKFLOW_COMPACT_SIGNAL"
	// helperAckWait makes a killed worker's job come back quickly.
	helperAckWait = 2 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		if err := workerMain(); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// workerMain is a compaction worker process, configured by the environment.
func workerMain() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	bkt, err := objstore.NewFilesystem(os.Getenv(helperBucketEnv))
	if err != nil {
		return err
	}
	if at := os.Getenv(helperStallEnv); at != "" {
		bkt = stallingBucket{Bucket: bkt, at: at, signal: os.Getenv(helperSignalEnv)}
	}
	b, err := bus.Connect(ctx, bus.Config{URL: os.Getenv(helperURLEnv)}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	w, err := compact.New(compact.Options{
		Bucket: bkt, Catalogue: b.Catalogue(), Publisher: b, DataDir: os.Getenv(helperDataEnv), Logger: log,
	})
	if err != nil {
		return err
	}
	return bus.Run(ctx, b, bus.ConsumerSpec{
		Stream: bus.StreamJobs, Durable: compact.Durable, FilterSubjects: []string{b.JobFilter(schemas.JobCompact)},
		AckWait: helperAckWait,
	}, w.Handle)
}

// stallingBucket hangs on the first upload of an object whose name ends with at.
type stallingBucket struct {
	objstore.Bucket
	at, signal string
}

func (s stallingBucket) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	if strings.HasSuffix(name, s.at) {
		if err := os.WriteFile(s.signal, []byte(name), 0o644); err != nil {
			return err
		}
		select {}
	}
	return s.Bucket.Upload(ctx, name, r, size)
}
