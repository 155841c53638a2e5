package compact_test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/planner"
)

// workerProcess is a compaction worker in a process of its own (the test binary, see
// TestMain), with its log in a file shown when the test fails.
type workerProcess struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startWorker(t *testing.T, e *env, stallAt, signal string) *workerProcess {
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
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
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

// TestKilledWorkerLeavesOneOutput kills a worker process with SIGKILL at three points of
// a job: while its output is half uploaded (no meta.json), just before the output's
// meta.json (the commit point), and after the commit but before the inputs are marked.
// The job comes back to a new worker, and the bucket ends with exactly one output, whole,
// and every input marked.
func TestKilledWorkerLeavesOneOutput(t *testing.T) {
	for _, stallAt := range []string{"/index", "/" + block.MetaFilename, "/" + block.DeletionMarkFilename} {
		t.Run(strings.TrimPrefix(stallAt, "/"), func(t *testing.T) {
			e := newEnv(t)
			data := series{n: 10}
			inputs := e.uploadRange(t, data, groupLabels, start, start+5*range2h, true)
			res, err := planner.Plan(e.records(t), time.Now(), planner.Config{})
			if err != nil || len(res.Jobs) != 1 {
				t.Fatalf("plan: %v, %d jobs", err, len(res.Jobs))
			}
			job := res.Jobs[0]
			if err := e.bus.PublishJob(context.Background(), schemas.JobCompact, job.Group, job.ID, job); err != nil {
				t.Fatal(err)
			}
			out, err := job.OutputULID()
			if err != nil {
				t.Fatal(err)
			}

			signal := filepath.Join(t.TempDir(), "stalled")
			first := startWorker(t, e, stallAt, signal)
			waitFor(t, "the worker to reach "+stallAt, func() bool {
				_, err := os.Stat(signal)
				return err == nil
			})
			first.kill()
			if stallAt != "/"+block.DeletionMarkFilename && e.exists(t, out.String()+"/"+block.MetaFilename) {
				t.Fatal("the output was committed before the kill point")
			}

			startWorker(t, e, "", "")
			waitFor(t, "the job finished by the second worker", func() bool {
				for _, in := range inputs[:4] {
					if e.record(t, in.ULID).State != schemas.StateMarked {
						return false
					}
				}
				return true
			})

			var dirs []string
			if err := e.bkt.Iter(context.Background(), "", false, func(name string) error {
				dirs = append(dirs, strings.TrimSuffix(name, "/"))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want := []string{out.String()}
			for _, in := range inputs {
				want = append(want, in.ULID.String())
			}
			slices.Sort(dirs)
			slices.Sort(want)
			if !slices.Equal(dirs, want) {
				t.Errorf("bucket holds %v, want the 5 inputs and one output %s", dirs, out)
			}
			recs := live(e.records(t))
			if len(recs) != 2 || recs[0].ULID != out || recs[1].ULID != inputs[4].ULID {
				t.Errorf("live blocks %v, want the output and the newest input", recs)
			}
			if got := readBlock(t, blockDir(e, out)); !maps.EqualFunc(got, data.samples(start, start+8*hour), slices.Equal) {
				t.Error("the output does not hold exactly the inputs' samples")
			}
		})
	}
}
