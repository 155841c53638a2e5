package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadCLIInput: bad flags or config files end the process with exit code 2 and one
// line on stderr that says what is wrong and where.
func TestBadCLIInput(t *testing.T) {
	needBinary(t)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	unknownType := write("unknown-type.yml", "type: GCSX\nconfig:\n  bucket: b\n")
	noBucket := write("no-bucket.yml", "type: S3\nconfig:\n  endpoint: 127.0.0.1:9000\n  access_key: a\n  secret_key: b\n  insecure: true\n")
	malformed := write("malformed.yml", "type: S3\nconfig:\n  bucket: [b\n  endpoint: 127.0.0.1:9000\n")
	// Nothing listens here: input must be rejected before any connection is tried.
	natsURL := "nats://" + loopback(t)

	tests := []struct {
		name string
		args []string
		want []string // what and where: each must appear in the line
	}{
		{"unknown objstore type", []string{"bucket", "ls", "--objstore.config-file", unknownType}, []string{unknownType, "GCSX"}},
		{"missing bucket", []string{"bucket", "ls", "--objstore.config-file", noBucket}, []string{noBucket, "bucket"}},
		{"malformed YAML", []string{"bucket", "ls", "--objstore.config-file", malformed}, []string{malformed, "line"}},
		{"malformed YAML for a worker", []string{"worker", "upload", "--nats.url", natsURL, "--objstore.config-file", malformed, "--data-dir", dir}, []string{malformed, "line"}},
		{"no external labels for the sidecar", []string{"sidecar", "--tsdb.path", dir, "--nats.url", natsURL, "--data-dir", dir}, []string{"--label"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := cli(t, tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || strings.TrimSpace(lines[0]) == "" {
				t.Fatalf("stderr has %d lines, want exactly one:\n%s", len(lines), stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr %q does not mention %q", lines[0], w)
				}
			}
		})
	}
}
