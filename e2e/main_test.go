// Package e2e runs blockflow as separate processes (a JetStream server, MinIO, sidecar,
// upload worker, queryd) against real Prometheus blocks, compares query answers with a
// reference Prometheus, and injects faults: killed and restarted processes, corrupt
// blocks, bad input. `go test -short` skips it.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// blockflowBin is the binary built once for the whole test binary; buildErr says why
// there is none.
var (
	blockflowBin string
	buildErr     error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "blockflow-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	blockflowBin, buildErr = build(filepath.Join(dir, "blockflow"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles ./cmd/blockflow of this module into out.
func build(out string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/blockflow")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/blockflow: %w\n%s", err, b)
	}
	return out, nil
}

// needBinary skips the test under -short and fails it when the binary did not build.
func needBinary(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: runs processes")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}
