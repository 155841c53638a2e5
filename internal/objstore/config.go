package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
)

// Bucket types of the Thanos objstore config that blockflow implements.
const (
	TypeS3         = "S3"
	TypeFilesystem = "FILESYSTEM"
)

// FilesystemConfig is the `config:` section of a Thanos objstore file with
// `type: FILESYSTEM`.
type FilesystemConfig struct {
	Directory string `yaml:"directory"`
}

// config is the Thanos objstore file: `type`, `config`, and an optional `prefix` under
// which every object lives. C is the type-specific section.
type config[C any] struct {
	Type   string `yaml:"type"`
	Config C      `yaml:"config"`
	Prefix string `yaml:"prefix"`
}

// NewFromFlags opens the bucket named by --objstore.config-file (configFile) or
// --objstore.config (configInline); exactly one must be set.
func NewFromFlags(ctx context.Context, configFile, configInline string, log zerolog.Logger) (Bucket, error) {
	switch {
	case configFile != "" && configInline != "":
		return nil, errors.New("objstore: set only one of --objstore.config-file and --objstore.config")
	case configFile != "":
		data, err := os.ReadFile(configFile)
		if err != nil {
			return nil, fmt.Errorf("objstore config: %w", err)
		}
		return newFromYAML(ctx, data, "--objstore.config-file "+configFile, log)
	case configInline != "":
		return newFromYAML(ctx, []byte(configInline), "--objstore.config", log)
	}
	return nil, errors.New("objstore: no bucket configured: set --objstore.config-file or --objstore.config")
}

// NewFromYAML opens the bucket a Thanos objstore YAML document describes. $(VAR) is
// replaced by the environment variable VAR, as in Thanos.
func NewFromYAML(ctx context.Context, data []byte, log zerolog.Logger) (Bucket, error) {
	return newFromYAML(ctx, data, "", log)
}

// newFromYAML is NewFromYAML with where, the config's origin, named in every error.
func newFromYAML(ctx context.Context, data []byte, where string, log zerolog.Logger) (Bucket, error) {
	errorf := func(format string, args ...any) error {
		if where != "" {
			format = "objstore config (" + where + "): " + format
		} else {
			format = "objstore config: " + format
		}
		return fmt.Errorf(format, args...)
	}
	data, err := expandEnv(data)
	if err != nil {
		return nil, errorf("%w", err)
	}
	// The type decides how to read `config`, so read it first, then decode the whole
	// document strictly (yaml.v3 can only reject unknown keys on a whole document, and
	// that keeps its line numbers right).
	var head config[yaml.Node]
	if err := decodeStrict(data, &head); err != nil {
		return nil, errorf("%w", err)
	}
	var bkt Bucket
	switch strings.ToUpper(head.Type) {
	case TypeS3:
		var c config[S3Config]
		if err := decodeStrict(data, &c); err != nil {
			return nil, errorf("%w", err)
		}
		if bkt, err = NewS3(ctx, c.Config, log); err != nil {
			return nil, errorf("%w", err)
		}
	case TypeFilesystem:
		var c config[FilesystemConfig]
		if err := decodeStrict(data, &c); err != nil {
			return nil, errorf("%w", err)
		}
		if c.Config.Directory == "" {
			return nil, errorf("FILESYSTEM directory is missing (config.directory)")
		}
		if bkt, err = NewFilesystem(c.Config.Directory); err != nil {
			return nil, errorf("%w", err)
		}
	case "":
		return nil, errorf("type is missing; supported: %s, %s", TypeS3, TypeFilesystem)
	default:
		return nil, errorf("unknown objstore type %q; supported: %s, %s", head.Type, TypeS3, TypeFilesystem)
	}
	return WithPrefix(bkt, head.Prefix), nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// decodeStrict decodes data into v, rejecting unknown keys, with errors on one line.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	var typeErr *yaml.TypeError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF):
		return errors.New("the document is empty")
	case errors.As(err, &typeErr):
		msgs := make([]string, len(typeErr.Errors))
		for i, msg := range typeErr.Errors {
			msgs[i] = unknownField.ReplaceAllString(msg, `unknown key "$1"`)
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	return err
}

var envRef = regexp.MustCompile(`\$\(([a-zA-Z_0-9]+)\)`)

// expandEnv replaces $(VAR) (Thanos's and Kubernetes' syntax, not ${VAR}) with the value
// of VAR; a reference to an unset variable is an error rather than an empty string.
func expandEnv(data []byte) ([]byte, error) {
	var err error
	out := envRef.ReplaceAllFunc(data, func(ref []byte) []byte {
		name := string(ref[2 : len(ref)-1])
		v, ok := os.LookupEnv(name)
		if !ok && err == nil {
			err = fmt.Errorf("found reference to unset environment variable %q", name)
		}
		return []byte(v)
	})
	return out, err
}
