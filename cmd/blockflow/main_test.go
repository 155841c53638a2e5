package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadInput checks that every kind of bad input exits with code 2 and one line on stderr
// that says what is wrong and where, before anything connects anywhere.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownType := write("gcs.yml", "type: GCS\nconfig: {bucket: x}\n")
	noBucket := write("nobucket.yml", "type: S3\nconfig: {endpoint: 127.0.0.1:1, access_key: a, secret_key: b}\n")
	malformed := write("bad.yml", "type: S3\nconfig: [\n")
	fsNoDir := write("fs.yml", "type: FILESYSTEM\nconfig: {}\n")

	for _, tc := range []struct {
		name string
		args []string
		want string // a piece of the one line
	}{
		{"no command", []string{}, "usage"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown flag", []string{"queryd", "--nope"}, "flag provided but not defined: -nope"},
		{"unknown objstore type", []string{"bucket", "ls", "--objstore.config-file", unknownType}, `unknown objstore type "GCS"`},
		{"missing bucket", []string{"bucket", "ls", "--objstore.config-file", noBucket}, "bucket"},
		{"malformed yaml", []string{"bucket", "ls", "--objstore.config-file", malformed}, "bad.yml"},
		{"filesystem without directory", []string{"bucket", "ls", "--objstore.config-file", fsNoDir}, "directory"},
		{"no objstore config", []string{"worker", "upload", "--nats.url", "nats://127.0.0.1:1"}, "objstore"},
		{"missing config file", []string{"bucket", "ls", "--objstore.config-file", filepath.Join(dir, "absent.yml")}, "absent.yml"},
		{"no external labels", []string{"sidecar", "--tsdb.path", dir, "--nats.url", "nats://127.0.0.1:1"}, "no external labels"},
		{"bad label", []string{"sidecar", "--tsdb.path", dir, "--nats.url", "nats://127.0.0.1:1", "--label", "novalue"}, "--label"},
		{"sidecar without tsdb path", []string{"sidecar", "--label", "a=b", "--nats.url", "nats://127.0.0.1:1"}, "--tsdb.path is required"},
		{"sidecar without nats", []string{"sidecar", "--tsdb.path", dir, "--label", "a=b"}, "--nats.url is required"},
		{"unknown stage", []string{"worker", "frob"}, `unknown stage "frob"`},
		{"raw retention shorter than 40h", []string{"worker", "retention", "--nats.url", "nats://127.0.0.1:1", "--retention.resolution-raw", "24h"}, "--retention.resolution-raw=24h0m0s is shorter than the 40h"},
		{"5m retention shorter than 10d", []string{"worker", "retention", "--nats.url", "nats://127.0.0.1:1", "--retention.resolution-5m", "48h"}, "--retention.resolution-5m=48h0m0s"},
		{"bad compaction ranges", []string{"worker", "plan", "--nats.url", "nats://127.0.0.1:1", "--compact.ranges", "2h,banana"}, "--compact.ranges"},
		{"dev without input", []string{"dev"}, "--tsdb.path or --demo"},
		{"bad log level", []string{"dev", "--demo", "--log.level", "loud", "--data-dir", dir}, "--log.level"},
		{"stray argument", []string{"version", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, tc.args, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr.String())
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if tc.name != "no command" && strings.Contains(out, "\n") {
				t.Errorf("stderr has more than one line:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("stderr %q does not mention %q", out, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "blockflow ") {
		t.Errorf("version output %q", stdout.String())
	}
}
