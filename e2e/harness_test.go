package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
)

// Time limits, generous for a busy 2-core machine. A redelivered event waits out the
// upload consumer's 30s lease, so convergence after a kill takes at least that long.
const (
	readyTimeout    = 60 * time.Second
	convergeTimeout = 3 * time.Minute
	cliTimeout      = 60 * time.Second
	pollInterval    = 200 * time.Millisecond
)

// Process is one blockflow (or other) process with its log in a file. It is killed when
// the test ends, and the end of its log is shown if the test failed.
type Process struct {
	t        testing.TB
	name     string
	bin      string
	args     []string
	httpAddr string // serves /-/ready; empty: ready when tcpAddr accepts connections
	tcpAddr  string
	logPath  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// startProcess runs bin with args and waits until it is ready: /-/ready answers 200 on
// httpAddr, or, without one, tcpAddr accepts connections.
func startProcess(t testing.TB, name, bin, httpAddr, tcpAddr string, args ...string) *Process {
	t.Helper()
	p := &Process{
		t: t, name: name, bin: bin, args: args, httpAddr: httpAddr, tcpAddr: tcpAddr,
		logPath: filepath.Join(t.TempDir(), name+".log"),
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("--- log of %s (%s):\n%s", p.name, p.logPath, p.logTail())
		}
	})
	p.Start()
	return p
}

// Start starts the process (again) and waits until it is ready.
func (p *Process) Start() {
	p.t.Helper()
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("%s: log file: %v", p.name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	fmt.Fprintf(logFile, "=== %s %s\n", p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for !p.ready(ctx) {
		select {
		case <-exited:
			p.t.Fatalf("%s exited during start (%v); log:\n%s", p.name, cmd.ProcessState, p.logTail())
		case <-ctx.Done():
			p.t.Fatalf("%s not ready after %v; log:\n%s", p.name, readyTimeout, p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *Process) ready(ctx context.Context) bool {
	if p.httpAddr == "" {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.tcpAddr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	code, _, err := httpGet(ctx, "http://"+p.httpAddr+"/-/ready")
	return err == nil && code == http.StatusOK
}

// Kill sends SIGKILL, as a crash would, and waits until the process is gone. It is safe
// to call from any goroutine.
func (p *Process) Kill() {
	cmd, exited := p.current()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Stop sends SIGTERM and waits up to 10s for the process to drain, then kills it.
func (p *Process) Stop() {
	cmd, exited := p.current()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Restart kills the process and starts it again with the same arguments.
func (p *Process) Restart() {
	p.t.Helper()
	p.Kill()
	p.Start()
}

// current returns the running command, or nil when none runs.
func (p *Process) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, nil
	}
	select {
	case <-p.exited:
		return nil, nil
	default:
		return p.cmd, p.exited
	}
}

// URL is the base URL of the process' HTTP server.
func (p *Process) URL() string { return "http://" + p.httpAddr }

func (p *Process) logTail() string {
	const tailBytes = 16 << 10
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(data) > tailBytes {
		data = data[len(data)-tailBytes:]
	}
	return string(data)
}

// Metric returns the value of the sample named series (name plus labels exactly as the
// exposition writes them, e.g. `x_total{result="ok"}`) on the process' /metrics.
func (p *Process) Metric(t testing.TB, series string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := httpGet(ctx, p.URL()+"/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics: HTTP %d, %v", p.name, code, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
			if err != nil {
				t.Fatalf("%s /metrics: %s: %v", p.name, series, err)
			}
			return v
		}
	}
	t.Fatalf("%s /metrics has no %s", p.name, series)
	return 0
}

// cluster is one blockflow deployment: its own JetStream server and bucket (on a shared
// MinIO), and the blockflow processes a test starts on them.
type cluster struct {
	t            *testing.T
	dir          string
	natsURL      string
	objstoreFile string // the bucket, straight to MinIO
	bucket       objstore.Bucket
	nats         *Process
	querydGRPC   string // queryd's StoreAPI address, once queryd runs
}

// newCluster starts a JetStream server and makes a bucket called bucketName on minio.
func newCluster(t *testing.T, minio *testenv.MinIO, bucketName string) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir()}
	c.objstoreFile = c.writeFile("objstore.yml", minio.CreateBucket(t, bucketName))
	bkt, err := objstore.NewFromYAML(context.Background(), mustRead(t, c.objstoreFile), zerolog.Nop())
	if err != nil {
		t.Fatalf("open bucket: %v", err)
	}
	t.Cleanup(func() { bkt.Close() })
	c.bucket = bkt

	listen := loopback(t)
	c.natsURL = "nats://" + listen
	c.nats = startProcess(t, "nats", blockflowBin, "", listen,
		"nats", "--data-dir", filepath.Join(c.dir, "nats"), "--listen", listen)
	return c
}

func loopback(t testing.TB) string { return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) }

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeFile writes data into the cluster's directory and returns its path.
func (c *cluster) writeFile(name, data string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// blockflow starts a long-running blockflow command with its own --http-address and
// --data-dir (when withDataDir) and waits until it is ready.
func (c *cluster) blockflow(name string, withDataDir bool, args ...string) *Process {
	c.t.Helper()
	addr := loopback(c.t)
	args = append(args, "--http-address", addr, "--log.format", "json")
	if withDataDir {
		args = append(args, "--data-dir", filepath.Join(c.dir, name))
	}
	return startProcess(c.t, name, blockflowBin, addr, "", args...)
}

// sidecar ships the blocks of tsdbDir with the given external labels (k=v).
func (c *cluster) sidecar(tsdbDir string, labels ...string) *Process {
	c.t.Helper()
	args := []string{"sidecar", "--tsdb.path", tsdbDir, "--nats.url", c.natsURL}
	for _, l := range labels {
		args = append(args, "--label", l)
	}
	return c.blockflow("sidecar", true, args...)
}

// uploadWorker runs the upload stage against the bucket objstoreFile describes (the
// cluster's own when empty).
func (c *cluster) uploadWorker(objstoreFile string) *Process {
	c.t.Helper()
	if objstoreFile == "" {
		objstoreFile = c.objstoreFile
	}
	return c.blockflow("upload", true, "worker", "upload", "--nats.url", c.natsURL, "--objstore.config-file", objstoreFile, "--ack-wait", "5s")
}

func (c *cluster) queryd() *Process {
	c.t.Helper()
	c.querydGRPC = loopback(c.t)
	return c.blockflow("queryd", true, "queryd", "--nats.url", c.natsURL, "--objstore.config-file", c.objstoreFile,
		"--grpc-address", c.querydGRPC)
}

// thanosQuerier starts a stock Thanos Querier whose only endpoint is the StoreAPI at endpoint.
func thanosQuerier(t *testing.T, name, endpoint string) *Process {
	t.Helper()
	httpAddr := loopback(t)
	return startProcess(t, name, testenv.Bin(t, "thanos"), httpAddr, "",
		"query", "--http-address", httpAddr, "--grpc-address", loopback(t), "--endpoint", endpoint, "--log.level", "warn")
}

// thanosSidecar starts a stock Thanos sidecar (no bucket: StoreAPI only) next to the
// Prometheus at promURL over tsdbDir, and returns it with its StoreAPI address.
func thanosSidecar(t *testing.T, promURL, tsdbDir string) (*Process, string) {
	t.Helper()
	httpAddr, grpcAddr := loopback(t), loopback(t)
	p := startProcess(t, "thanos-sidecar", testenv.Bin(t, "thanos"), httpAddr, "",
		"sidecar", "--prometheus.url", promURL, "--tsdb.path", tsdbDir,
		"--http-address", httpAddr, "--grpc-address", grpcAddr, "--log.level", "warn")
	return p, grpcAddr
}

// cli runs a one-shot blockflow command and returns its stdout, stderr and exit code.
func cli(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, blockflowBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		code = exit.ExitCode()
	default:
		t.Fatalf("blockflow %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String(), code
}

// bucketLs runs `blockflow bucket ls` and returns the block ULIDs it lists, one per line
// that names a block, in order (a block listed twice appears twice).
func (c *cluster) bucketLs() []ulid.ULID {
	c.t.Helper()
	out, errOut, code := cli(c.t, "bucket", "ls", "--objstore.config-file", c.objstoreFile)
	if code != 0 {
		c.t.Fatalf("bucket ls: exit %d: %s", code, errOut)
	}
	var ids []ulid.ULID
	for _, line := range strings.Split(out, "\n") {
		if id, ok := findULID(line); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// dlqLs runs `blockflow dlq ls` and returns its lines (stage, block, reason each).
func (c *cluster) dlqLs() []string {
	c.t.Helper()
	out, errOut, code := cli(c.t, "dlq", "ls", "--nats.url", c.natsURL)
	if code != 0 {
		c.t.Fatalf("dlq ls: exit %d: %s", code, errOut)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// findULID returns the first whitespace-separated field of line that is a ULID.
func findULID(line string) (ulid.ULID, bool) {
	for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == '/' || r == ',' }) {
		if id, err := ulid.ParseStrict(f); err == nil {
			return id, true
		}
	}
	return ulid.ULID{}, false
}

// committed lists the blocks of the bucket with a meta.json and those without (partial
// uploads), straight from object storage.
func (c *cluster) committed(ctx context.Context) (complete, partial []ulid.ULID, err error) {
	err = c.bucket.Iter(ctx, "", false, func(name string) error {
		id, perr := ulid.ParseStrict(strings.TrimSuffix(name, "/"))
		if perr != nil {
			return nil
		}
		ok, err := c.bucket.Exists(ctx, path.Join(id.String(), "meta.json"))
		if err != nil {
			return err
		}
		if ok {
			complete = append(complete, id)
		} else {
			partial = append(partial, id)
		}
		return nil
	})
	return complete, partial, err
}

// waitFor polls cond until it holds, failing the test after timeout with the last reason
// cond gave.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(pollInterval)
	}
}

// waitForBlocks waits until the bucket holds exactly the want blocks, all committed.
func (c *cluster) waitForBlocks(want []ulid.ULID) {
	c.t.Helper()
	waitFor(c.t, convergeTimeout, fmt.Sprintf("%d blocks in the bucket", len(want)), func() (bool, string) {
		complete, partial, err := c.committed(context.Background())
		if err != nil {
			return false, err.Error()
		}
		why := fmt.Sprintf("committed %v, partial %v", complete, partial)
		return sameULIDs(complete, want) && len(partial) == 0, why
	})
}

func sameULIDs(a, b []ulid.ULID) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[ulid.ULID]int{}
	for _, id := range a {
		seen[id]++
	}
	for _, id := range b {
		seen[id]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

// localBlocks returns the ULIDs of the block directories in dir.
func localBlocks(t testing.TB, dir string) []ulid.ULID {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ulid.ULID
	for _, e := range entries {
		if id, err := ulid.ParseStrict(e.Name()); err == nil && e.IsDir() {
			ids = append(ids, id)
		}
	}
	return ids
}

func httpGet(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
