package downsample

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
)

// The test binary doubles as a downsample worker process, so a test can kill one with
// SIGKILL mid-job: with helperEnv set, TestMain runs the worker instead of the tests.
const (
	helperEnv       = "BLOCKFLOW_DOWNSAMPLE_WORKER"
	helperURLEnv    = "BLOCKFLOW_DOWNSAMPLE_NATS_URL"
	helperBucketEnv = "BLOCKFLOW_DOWNSAMPLE_BUCKET"
	helperDataEnv   = "BLOCKFLOW_DOWNSAMPLE_DATA"
	// helperStallEnv names an object at which the worker stops: it creates helperSignalEnv's
	// file and hangs, waiting to be killed, before writing the object or, with
	// helperStallAfterEnv set, right after.
	helperStallEnv      = "BLOCKFLOW_DOWNSAMPLE_STALL_AT"
	helperStallAfterEnv = "BLOCKFLOW_DOWNSAMPLE_STALL_AFTER"
	helperSignalEnv     = "BLOCKFLOW_DOWNSAMPLE_SIGNAL"
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

// workerMain is a downsample worker process, configured by the environment.
func workerMain() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	bkt, err := objstore.NewFilesystem(os.Getenv(helperBucketEnv))
	if err != nil {
		return err
	}
	if at := os.Getenv(helperStallEnv); at != "" {
		bkt = stallingBucket{Bucket: bkt, at: at, after: os.Getenv(helperStallAfterEnv) != "", signal: os.Getenv(helperSignalEnv)}
	}
	b, err := bus.Connect(ctx, bus.Config{URL: os.Getenv(helperURLEnv)}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	w := &Worker{Bucket: bkt, Catalogue: b.Catalogue(), Publisher: b, DataDir: os.Getenv(helperDataEnv), Logger: log}
	return bus.Run(ctx, b, killConsumerSpec(b), w.Handle)
}

// killConsumerSpec is the pool both the killed worker and its successor join.
func killConsumerSpec(b *bus.Bus) bus.ConsumerSpec {
	return bus.ConsumerSpec{
		Stream: bus.StreamJobs, Durable: "downsample", FilterSubjects: []string{b.JobFilter(schemas.JobDownsample)},
		AckWait: helperAckWait,
	}
}

// stallingBucket hangs on the first upload of an object whose name ends with at, before
// writing it or, if after, once it is written.
type stallingBucket struct {
	objstore.Bucket
	at     string
	after  bool
	signal string
}

func (s stallingBucket) Upload(ctx context.Context, name string, r io.Reader, size int64) error {
	if !strings.HasSuffix(name, s.at) {
		return s.Bucket.Upload(ctx, name, r, size)
	}
	if s.after {
		if err := s.Bucket.Upload(ctx, name, r, size); err != nil {
			return err
		}
	}
	if err := os.WriteFile(s.signal, []byte(name), 0o644); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}
