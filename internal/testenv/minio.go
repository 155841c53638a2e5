package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/blockflow/blockflow/internal/objstore"
)

// startTimeout bounds a MinIO start on a busy 2-core machine.
const startTimeout = 60 * time.Second

// MinIO is a MinIO server on loopback, run from the binary test-deps installs. Its data
// survives Stop and Kill, so a test can take S3 away and bring it back with Restart.
type MinIO struct {
	Endpoint  string // host:port, plain HTTP
	AccessKey string
	SecretKey string
	Bucket    string // created at start

	bin, dataDir, logPath, consoleAddr string

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// StartMinIO starts MinIO with an empty data directory and a bucket, and stops it when
// the test ends, showing its log if the test failed. Starting takes a second or two, so
// share one per package (run the tests that need it as subtests, a bucket each).
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	base := t.TempDir()
	port, consolePort := FreePort(t), FreePort(t)
	for consolePort == port {
		consolePort = FreePort(t)
	}
	m := &MinIO{
		Endpoint:    loopback(port),
		AccessKey:   "blockflow",
		SecretKey:   "blockflow-test-secret",
		Bucket:      "blockflow",
		bin:         Bin(t, "minio"),
		dataDir:     filepath.Join(base, "data"),
		logPath:     filepath.Join(base, "minio.log"),
		consoleAddr: loopback(consolePort),
	}
	t.Cleanup(func() {
		m.Kill(t)
		if t.Failed() {
			t.Logf("MinIO log (%s):\n%s", m.logPath, m.logTail())
		}
	})
	m.start(t)
	return m
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// S3Config is the configuration of the bucket made at start.
func (m *MinIO) S3Config() objstore.S3Config {
	return objstore.S3Config{
		Bucket:    m.Bucket,
		Endpoint:  m.Endpoint,
		AccessKey: m.AccessKey,
		SecretKey: m.SecretKey,
		Insecure:  true,
	}
}

// ObjstoreYAML is the Thanos objstore config of the bucket made at start.
func (m *MinIO) ObjstoreYAML() string { return m.objstoreYAML(m.Bucket) }

func (m *MinIO) objstoreYAML(bucket string) string {
	return fmt.Sprintf(`type: S3
config:
  bucket: %s
  endpoint: %s
  access_key: %s
  secret_key: %s
  insecure: true
`, bucket, m.Endpoint, m.AccessKey, m.SecretKey)
}

// CreateBucket makes another bucket (for a test that wants one of its own) and returns
// its objstore config.
func (m *MinIO) CreateBucket(t testing.TB, name string) string {
	t.Helper()
	cfg := m.S3Config()
	cfg.Bucket = name
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := objstore.CreateS3Bucket(ctx, cfg); err != nil {
		t.Fatalf("MinIO: %v", err)
	}
	return m.objstoreYAML(name)
}

// Stop shuts MinIO down gracefully, killing it if it takes more than 10s.
func (m *MinIO) Stop(t testing.TB) {
	t.Helper()
	if !m.running() {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.Kill(t)
	}
}

// Kill stops MinIO at once, as a crash would.
func (m *MinIO) Kill(t testing.TB) {
	t.Helper()
	if !m.running() {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// Restart stops MinIO if it runs and starts it again on the same address and data.
func (m *MinIO) Restart(t testing.TB) {
	t.Helper()
	m.Stop(t)
	m.start(t)
}

func (m *MinIO) running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// start runs the server and waits until it serves S3 requests.
func (m *MinIO) start(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("MinIO log: %v", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(m.bin, "server", m.dataDir, "--address", m.Endpoint, "--console-address", m.consoleAddr)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start MinIO: %v", err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(m.exited)

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := m.waitReady(ctx); err != nil {
		t.Fatalf("MinIO at %s: %v; log:\n%s", m.Endpoint, err, m.logTail())
	}
}

// waitReady polls the liveness endpoint, then makes the bucket (which exists already
// after a restart), since a live server may still refuse S3 calls while it initializes.
func (m *MinIO) waitReady(ctx context.Context) error {
	live := "http://" + m.Endpoint + "/minio/health/live"
	var lastErr error
	for {
		if m.isLive(ctx, live) {
			if lastErr = objstore.CreateS3Bucket(ctx, m.S3Config()); lastErr == nil {
				return nil
			}
		}
		select {
		case <-m.exited:
			return fmt.Errorf("exited during start (%v)", m.cmd.ProcessState)
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("not ready: %w", lastErr)
			}
			return fmt.Errorf("not live after %v", startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *MinIO) isLive(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// logTail returns the end of MinIO's log.
func (m *MinIO) logTail() string {
	const tailBytes = 8 << 10
	data, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	if len(data) > tailBytes {
		data = data[len(data)-tailBytes:]
	}
	return string(data)
}
