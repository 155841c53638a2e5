package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/bus"
	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/objstore"
)

var errHelp = errors.New("help requested")

// newFlagSet returns a flag set whose parse errors become usage errors.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("blockflow "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args and turns flag errors into one-line usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(out, "usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		return errHelp
	}
	if err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// stringsFlag is a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, ",") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

// logFlags configures the logger.
type logFlags struct{ level, format string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log.level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log.format", "auto", "log format: json, console, auto (console on a terminal)")
}

func (l *logFlags) logger(stderr io.Writer, component string) (zerolog.Logger, error) {
	log, err := logging.New(stderr, l.level, l.format)
	if err != nil {
		return log, usagef("--log.level: %v", err)
	}
	return log.With().Str(logging.FieldRole, component).Logger(), nil
}

// natsFlags says how to reach NATS.
type natsFlags struct {
	cfg bus.Config
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.cfg.URL, "nats.url", "", "NATS server URL(s), comma-separated")
	fs.StringVar(&n.cfg.CredsFile, "nats.creds", "", "NATS credentials (.creds) file")
	fs.StringVar(&n.cfg.User, "nats.user", "", "NATS user")
	fs.StringVar(&n.cfg.Password, "nats.password", "", "NATS password (prefer $BLOCKFLOW_NATS_PASSWORD)")
	fs.StringVar(&n.cfg.Token, "nats.token", "", "NATS token (prefer $BLOCKFLOW_NATS_TOKEN)")
	fs.StringVar(&n.cfg.TLSCA, "nats.tls-ca", "", "CA certificate to verify the NATS server")
	fs.StringVar(&n.cfg.TLSCert, "nats.tls-cert", "", "client certificate for NATS")
	fs.StringVar(&n.cfg.TLSKey, "nats.tls-key", "", "client key for NATS")
	fs.StringVar(&n.cfg.Prefix, "nats.prefix", bus.DefaultPrefix, "first token of every subject")
	fs.IntVar(&n.cfg.Replicas, "nats.replicas", 1, "replicas of streams, catalogue and staging (3 on a cluster)")
	fs.StringVar(&n.cfg.Domain, "nats.domain", "", "JetStream domain to use (empty: the local one)")
}

func (n *natsFlags) config(name string) (bus.Config, error) {
	cfg := n.cfg
	if cfg.URL == "" {
		return cfg, usagef("--nats.url is required")
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("BLOCKFLOW_NATS_PASSWORD")
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("BLOCKFLOW_NATS_TOKEN")
	}
	cfg.Name = name
	return cfg, nil
}

// objstoreFlags selects the bucket with the Thanos objstore YAML.
type objstoreFlags struct{ file, inline string }

func (o *objstoreFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "objstore.config-file", "", "path to the Thanos objstore YAML (type: S3|FILESYSTEM)")
	fs.StringVar(&o.inline, "objstore.config", "", "the Thanos objstore YAML itself (alternative to --objstore.config-file)")
}

func (o *objstoreFlags) bucket(ctx context.Context, log zerolog.Logger) (objstore.Bucket, error) {
	b, err := objstore.NewFromFlags(ctx, o.file, o.inline, log)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return b, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", p)
	}
	return host, port, nil
}
