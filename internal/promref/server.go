// Package promref runs a real reference Prometheus (the go.mod version, installed by
// scripts/test-deps.sh) over a copy of a blocks directory, and compares its HTTP API
// answers with blockflow's. Only tests import it.
package promref

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockflow/blockflow/internal/testenv"
)

// startTimeout bounds a start, including loading the blocks, on a busy 2-core machine.
const startTimeout = 90 * time.Second

// Options configure a reference server.
type Options struct {
	// BlocksDir is copied into the server's TSDB directory; empty starts an empty TSDB.
	BlocksDir string
	// ExternalLabels go into global.external_labels. Prometheus does not add them to
	// query results, so comparisons drop them from blockflow's side.
	ExternalLabels map[string]string
	// ScrapeTargets (host:port) are scraped every ScrapeInterval by job "targets"; none by default.
	ScrapeTargets  []string
	ScrapeInterval time.Duration // default 15s
	// Args are extra command-line flags.
	Args []string
}

// Server is a running reference Prometheus.
type Server struct {
	t       testing.TB
	bin     string
	args    []string // without --web.listen-address
	dir     string   // TSDB path
	logPath string
	addr    string

	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
}

// Start copies opts.BlocksDir, starts Prometheus on a free loopback port and waits until
// it reports ready. The server is stopped when the test ends, and its log shown if the
// test failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	base := t.TempDir()
	s := &Server{
		t:       t,
		bin:     testenv.Bin(t, "prometheus"),
		dir:     filepath.Join(base, "data"),
		logPath: filepath.Join(base, "prometheus.log"),
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if opts.BlocksDir != "" {
		if err := copyDir(opts.BlocksDir, s.dir); err != nil {
			t.Fatalf("copy blocks for the reference Prometheus: %v", err)
		}
	}
	configPath := filepath.Join(base, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config(opts)), 0o644); err != nil {
		t.Fatal(err)
	}
	s.args = append([]string{
		"--config.file=" + configPath,
		"--storage.tsdb.path=" + s.dir,
		"--storage.tsdb.retention.time=100y",
		// Equal block durations: Prometheus never compacts the copied blocks, as with a sidecar.
		"--storage.tsdb.min-block-duration=2h",
		"--storage.tsdb.max-block-duration=2h",
		"--log.level=info",
	}, opts.Args...)
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("reference Prometheus log (%s):\n%s", s.logPath, s.logTail())
		}
	})
	s.start()
	return s
}

// config renders prometheus.yml.
func config(opts Options) string {
	var b strings.Builder
	interval := opts.ScrapeInterval
	if interval == 0 {
		interval = 15 * time.Second
	}
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n", interval)
	if len(opts.ExternalLabels) > 0 {
		b.WriteString("  external_labels:\n")
		keys := make([]string, 0, len(opts.ExternalLabels))
		for k := range opts.ExternalLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "    %s: %s\n", k, strconv.Quote(opts.ExternalLabels[k]))
		}
	}
	if len(opts.ScrapeTargets) > 0 {
		b.WriteString("scrape_configs:\n  - job_name: targets\n    static_configs:\n      - targets:\n")
		for _, target := range opts.ScrapeTargets {
			fmt.Fprintf(&b, "          - %s\n", strconv.Quote(target))
		}
	}
	return b.String()
}

// URL is the server's base URL, e.g. http://127.0.0.1:9090.
func (s *Server) URL() string { return "http://" + s.addr }

// Dir is the server's TSDB directory (the copy).
func (s *Server) Dir() string { return s.dir }

// Stop shuts Prometheus down gracefully, killing it if it takes more than 10s.
func (s *Server) Stop() {
	if !s.running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.Kill()
	}
}

// Kill stops Prometheus at once, as a crash would.
func (s *Server) Kill() {
	if !s.running() {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

func (s *Server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// start runs Prometheus until it is ready. The port comes from a probe that another
// process may take before Prometheus binds it, so a bind failure is retried on a new one.
func (s *Server) start() {
	s.t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.addr = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(s.t))
		err := s.run()
		if err == nil {
			return
		}
		if attempt == attempts || !strings.Contains(s.logTail(), "address already in use") {
			s.t.Fatalf("reference Prometheus: %v; log:\n%s", err, s.logTail())
		}
	}
}

func (s *Server) run() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(s.bin, append(s.args, "--web.listen-address="+s.addr)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.exited)

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	ready := s.URL() + "/-/ready"
	for {
		if isReady(ctx, ready) {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited during start (%v)", cmd.ProcessState)
		case <-ctx.Done():
			s.Kill()
			return fmt.Errorf("not ready after %v", startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func isReady(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// logTail returns the end of the server's log.
func (s *Server) logTail() string {
	const tailBytes = 8 << 10
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	if len(data) > tailBytes {
		data = data[len(data)-tailBytes:]
	}
	return string(data)
}

// copyDir copies the regular files under src into dst, keeping the tree.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, target)
		default:
			return nil
		}
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
