// Package testenv gives tests the real programs they run against (MinIO, promtool,
// Prometheus), installed by scripts/test-deps.sh, and loopback ports to run them on.
// Only tests import it.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Bin returns the path of the program called name, looking in $BLOCKFLOW_BIN, then in
// the test-deps cache (${BLOCKFLOW_CACHE:-$HOME/.cache/blockflow}/bin), then in $PATH.
// It fails the test when the program is missing.
func Bin(t testing.TB, name string) string {
	t.Helper()
	var dirs []string
	if dir := os.Getenv("BLOCKFLOW_BIN"); dir != "" {
		dirs = append(dirs, dir)
	}
	if cache := cacheDir(); cache != "" {
		dirs = append(dirs, filepath.Join(cache, "bin"))
	}
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found: run `go tool task deps` (scripts/test-deps.sh)", name)
	return ""
}

func cacheDir() string {
	if dir := os.Getenv("BLOCKFLOW_CACHE"); dir != "" {
		return dir
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".cache", "blockflow")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
