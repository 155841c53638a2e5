package objstore_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/testenv"
)

func TestConfigErrors(t *testing.T) {
	t.Setenv("BLOCKFLOW_TEST_DIR", t.TempDir())
	for _, tc := range []struct {
		name, config string
		want         []string // substrings of the error
	}{
		{"malformed YAML", "type: S3\nconfig:\n  bucket: [x\n", []string{"line"}},
		{"empty", "", []string{"empty"}},
		{"not a mapping", "- S3\n", []string{"line 1"}},
		{"unknown type", "type: GCS\nconfig:\n  bucket: x\n", []string{`unknown objstore type "GCS"; supported: S3, FILESYSTEM`}},
		{"missing type", "config:\n  directory: /tmp/x\n", []string{"type is missing"}},
		{"missing bucket", "type: S3\nconfig:\n  endpoint: 127.0.0.1:9000\n", []string{"S3 bucket name is missing"}},
		{"missing endpoint", "type: S3\nconfig:\n  bucket: b\n", []string{"S3 endpoint is missing"}},
		{"access key without secret", "type: S3\nconfig:\n  bucket: b\n  endpoint: 127.0.0.1:9000\n  access_key: k\n", []string{"secret_key is missing"}},
		{"missing directory", "type: FILESYSTEM\nconfig: {}\n", []string{"directory is missing"}},
		{"unknown S3 key", "type: S3\nconfig:\n  bucket: b\n  endpoint: 127.0.0.1:9000\n  acces_key: k\n", []string{`line 5: unknown key "acces_key"`}},
		{"unknown FILESYSTEM key", "type: FILESYSTEM\nconfig:\n  dir: /tmp/x\n", []string{`line 3: unknown key "dir"`}},
		{"unknown top-level key", "type: FILESYSTEM\nconfig:\n  directory: /tmp/x\nprefx: a\n", []string{`line 4: unknown key "prefx"`}},
		{"unset variable", "type: FILESYSTEM\nconfig:\n  directory: $(BLOCKFLOW_TEST_UNSET)\n", []string{`unset environment variable "BLOCKFLOW_TEST_UNSET"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := objstore.NewFromYAML(t.Context(), []byte(tc.config), zerolog.Nop())
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "objstore config: ") || strings.Contains(msg, "\n") {
				t.Errorf("not one line naming the objstore config: %q", msg)
			}
			for _, want := range tc.want {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestConfigEnvExpansion(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("BLOCKFLOW_TEST_DIR", dir)
	bkt := openYAML(t, "type: filesystem\nconfig:\n  directory: $(BLOCKFLOW_TEST_DIR)/bucket\n")
	upload(t, bkt, "obj", "x")
	if _, err := os.Stat(filepath.Join(dir, "bucket", "obj")); err != nil {
		t.Fatal(err)
	}
}

func TestNewFromFlags(t *testing.T) {
	dir := t.TempDir()
	good := "type: FILESYSTEM\nconfig:\n  directory: " + filepath.Join(dir, "bucket") + "\n"
	goodFile := filepath.Join(dir, "good.yaml")
	badFile := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(goodFile, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badFile, []byte("type: GCS\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, inline string
		wantErr            string // "" for success
	}{
		{"file", goodFile, "", ""},
		{"inline", "", good, ""},
		{"both", goodFile, good, "only one of --objstore.config-file and --objstore.config"},
		{"neither", "", "", "no bucket configured"},
		{"missing file", filepath.Join(dir, "nope.yaml"), "", "nope.yaml"},
		{"bad file", badFile, "", "objstore config (--objstore.config-file " + badFile + "): unknown objstore type"},
		{"bad inline", "", "type: GCS\n", "objstore config (--objstore.config): unknown objstore type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bkt, err := objstore.NewFromFlags(t.Context(), tc.file, tc.inline, zerolog.Nop())
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatal(err)
			case tc.wantErr == "":
				bkt.Close()
			case err == nil:
				t.Fatalf("no error, want %q", tc.wantErr)
			case !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

// testS3Config checks the errors that need a server to find.
func testS3Config(t *testing.T, m *testenv.MinIO) {
	cfg := func(bucket, secret string) string {
		return "type: S3\nconfig:\n  bucket: " + bucket + "\n  endpoint: " + m.Endpoint +
			"\n  access_key: " + m.AccessKey + "\n  secret_key: " + secret + "\n  insecure: true\n"
	}
	for _, tc := range []struct {
		name, config, want string
	}{
		{"bucket does not exist", cfg("nope", m.SecretKey), `bucket "nope" does not exist at http://` + m.Endpoint},
		{"wrong secret key", cfg(m.Bucket, "wrong-secret-key-123"), `check bucket "blockflow"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := objstore.NewFromYAML(t.Context(), []byte(tc.config), zerolog.Nop())
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			for _, secret := range []string{m.SecretKey, "wrong-secret-key-123"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows the secret key", err)
				}
			}
		})
	}
}
