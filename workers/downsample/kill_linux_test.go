package downsample

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/internal/testenv"
	"github.com/blockflow/blockflow/schemas"
)

// killTimeout bounds each wait of the kill test; the test normally takes a few seconds.
const killTimeout = time.Minute

// busEnv is the real embedded JetStream and a filesystem bucket, shared by the test and
// the worker processes it starts.
type busEnv struct {
	bus       *bus.Bus
	url       string
	bucketDir string
	bkt       objstore.Bucket
}

func newBusEnv(t *testing.T) *busEnv {
	t.Helper()
	b, url := testenv.StartBus(t)
	dir := t.TempDir()
	bkt, err := objstore.NewFilesystem(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bkt.Close() })
	return &busEnv{bus: b, url: url, bucketDir: dir, bkt: bkt}
}

// upload puts the raw block in dir in the bucket, as the upload stage leaves it, and
// catalogues it.
func (e *busEnv) upload(t *testing.T, dir string, meta block.Meta) schemas.BlockRecord {
	t.Helper()
	files, err := block.GatherFiles(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	meta.Thanos.Files, meta.Thanos.SegmentFiles = files, block.SegmentFiles(files)
	written, err := block.Upload(context.Background(), e.bkt, dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	rec := written.Record(schemas.StateLive)
	rec.Site = "eu-1"
	if err := e.bus.Catalogue().Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// workerProcess is a downsample worker in a process of its own (the test binary, see
// TestMain), with its log in a file shown when the test fails.
type workerProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// startWorkerProcess starts a worker that stalls at the object named by stallAt (before or
// after writing it) and then creates the file signal.
func startWorkerProcess(t *testing.T, e *busEnv, stallAt string, after bool, signal string) *workerProcess {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1", helperURLEnv+"="+e.url, helperBucketEnv+"="+e.bucketDir, helperDataEnv+"="+t.TempDir(),
		helperStallEnv+"="+stallAt, helperSignalEnv+"="+signal)
	if after {
		cmd.Env = append(cmd.Env, helperStallAfterEnv+"=1")
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The worker must not outlive the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("worker log:\n%s", data)
		}
	})
	return p
}

func (p *workerProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// runWorker runs a downsample worker in this process until the test ends.
func runWorker(t *testing.T, e *busEnv) *Metrics {
	w := &Worker{
		Bucket: e.bkt, Catalogue: e.bus.Catalogue(), Publisher: e.bus, DataDir: t.TempDir(),
		Logger: zerolog.Nop(), Metrics: NewMetrics(prometheus.NewRegistry()),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := bus.Run(ctx, e.bus, killConsumerSpec(e.bus), w.Handle); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return w.Metrics
}

// waitUntil polls cond until it holds or killTimeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(killTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bucketFiles lists every file under dir, temporary ones included, relative to dir.
func bucketFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestKilledWorkerLeavesOneOutput kills a worker process with SIGKILL at three points of
// a job: with the output's chunks in the bucket but not its index, with everything but
// meta.json (the commit point) in the bucket, and after the commit but before the
// catalogue record and the ack. The job comes back to a new worker, and the bucket ends
// with the input and exactly one output, whole and catalogued, and the queue empty.
func TestKilledWorkerLeavesOneOutput(t *testing.T) {
	rawDir, rawMeta := rawBlock(t, 6)
	wantSeries := len(readBlock(t, rawDir))
	for _, tc := range []struct {
		name    string
		stallAt string
		after   bool
		// committed: the output's meta.json is in the bucket when the worker dies.
		committed bool
		result    string
	}{
		{"chunks uploaded", "/" + block.IndexFilename, false, false, resultDownsampled},
		{"index uploaded", "/" + block.MetaFilename, false, false, resultDownsampled},
		{"meta.json uploaded", "/" + block.MetaFilename, true, true, resultDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newBusEnv(t)
			in := e.upload(t, rawDir, rawMeta)
			jobs := Plan([]schemas.BlockRecord{in})
			if len(jobs) != 1 {
				t.Fatalf("plan: %+v", jobs)
			}
			job := jobs[0]
			if err := e.bus.PublishJob(ctx, schemas.JobDownsample, job.Group, job.ID, job); err != nil {
				t.Fatal(err)
			}
			out := job.OutputULID()
			outMeta := path.Join(out.String(), block.MetaFilename)
			outChunks := path.Join(out.String(), block.ChunksDirname, "000001")

			signal := filepath.Join(t.TempDir(), "stalled")
			first := startWorkerProcess(t, e, tc.stallAt, tc.after, signal)
			waitUntil(t, "the worker to reach "+tc.stallAt, func() bool {
				_, err := os.Stat(signal)
				return err == nil
			})
			first.kill()
			if !exists(t, e.bkt, outChunks) || exists(t, e.bkt, outMeta) != tc.committed {
				t.Fatalf("at the kill: chunks uploaded %v, meta.json uploaded %v (want %v)",
					exists(t, e.bkt, outChunks), exists(t, e.bkt, outMeta), tc.committed)
			}
			if _, _, err := e.bus.Catalogue().Get(ctx, out); !stage.IsNotFound(err) {
				t.Fatalf("the output was catalogued before the kill: %v", err)
			}

			metrics := runWorker(t, e)
			var rec schemas.BlockRecord
			waitUntil(t, "the second worker to finish the job", func() bool {
				queued, err := e.bus.QueuedJobs(ctx, schemas.JobDownsample)
				if err != nil {
					t.Fatal(err)
				}
				if len(queued) > 0 {
					return false
				}
				rec, _, err = e.bus.Catalogue().Get(ctx, out)
				if err != nil && !stage.IsNotFound(err) {
					t.Fatal(err)
				}
				return err == nil
			})

			if rec.State != schemas.StateLive || rec.Resolution != schemas.Res5m || rec.Site != in.Site {
				t.Errorf("output record %+v", rec)
			}
			dead, err := e.bus.DeadLetters(ctx, "downsample")
			if err != nil || len(dead) != 0 {
				t.Errorf("dead letters %+v, %v", dead, err)
			}
			if got := testutil.ToFloat64(metrics.jobs.WithLabelValues(tc.result)); got != 1 {
				t.Errorf("second worker: %v jobs %s, want 1", got, tc.result)
			}

			meta, err := block.ReadMeta(ctx, e.bkt, out)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, f := range in.Files {
				want = append(want, path.Join(in.ULID.String(), f.RelPath))
			}
			for _, f := range meta.Thanos.Files {
				want = append(want, path.Join(out.String(), f.RelPath))
			}
			slices.Sort(want)
			if got := bucketFiles(t, e.bucketDir); !slices.Equal(got, want) {
				t.Errorf("bucket holds\n%v\nwant the input and one output\n%v", got, want)
			}
			if rec.NumSamples != meta.Stats.NumSamples || rec.MinTime != in.MinTime || rec.MaxTime != in.MaxTime {
				t.Errorf("record %+v does not match meta.json %+v", rec, meta.BlockMeta)
			}
			if got := readBlock(t, filepath.Join(e.bucketDir, out.String())); len(got) != wantSeries {
				t.Errorf("the output holds %d series, the input %d", len(got), wantSeries)
			}
		})
	}
}

func exists(t *testing.T, bkt objstore.Bucket, name string) bool {
	t.Helper()
	ok, err := bkt.Exists(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
