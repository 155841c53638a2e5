package bus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
)

// Defaults of EmbeddedOptions. The server's own defaults are derived from the host (75% of
// RAM for memory) and are far too large for a process that also does the work.
const (
	DefaultEmbeddedMaxStore  = 10 << 30
	DefaultEmbeddedMaxMemory = 256 << 20
	defaultEmbeddedHost      = "127.0.0.1"
	embeddedReadyTimeout     = 30 * time.Second
)

// EmbeddedOptions configure an in-process nats-server with JetStream.
type EmbeddedOptions struct {
	// StoreDir holds JetStream's files; required (it must survive restarts to be useful).
	StoreDir string
	// Host to listen on for clients (default 127.0.0.1).
	Host string
	// Port for clients. 0 and -1 both pick a free port (unlike nats-server, where 0 means
	// 4222); say 4222 to get 4222.
	Port int
	// ServerName is the server's name, required to be unique in a cluster (default
	// "blockflow").
	ServerName string
	// JetStreamDomain names this server's JetStream island, for leaf node setups.
	JetStreamDomain string
	// MaxStore and MaxMemory cap JetStream (defaults DefaultEmbeddedMaxStore and
	// DefaultEmbeddedMaxMemory).
	MaxStore, MaxMemory int64
	// Cluster makes the server a member of a cluster.
	Cluster *RouteOptions
	// LeafListen accepts leaf node connections from edge servers.
	LeafListen *ListenOptions
	// LeafRemotes are hub URLs (nats-leaf://host:port) to connect to as a leaf node.
	LeafRemotes []string
	// Log receives the server's notices, warnings and errors (the zero Logger drops them).
	Log zerolog.Logger
}

// RouteOptions place a server in a cluster. Every member lists every member's route URL
// (a route to itself is ignored), so the ports must be known before the servers start.
type RouteOptions struct {
	Name   string
	Host   string // default 127.0.0.1
	Port   int
	Routes []string // nats-route://host:port
}

// ListenOptions are a listening address; Port 0 or -1 picks a free port.
type ListenOptions struct {
	Host string // default 127.0.0.1
	Port int
}

// Embedded is an in-process nats-server.
type Embedded struct {
	srv  *server.Server
	opts *server.Options
	log  *serverLogger
}

// StartEmbedded starts a server and waits until it accepts clients with JetStream on.
// The server never traps signals: the process's own shutdown stays in charge.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	opts, err := o.serverOptions()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	l := &serverLogger{log: o.Log.With().Str(logging.FieldComponent, "nats-server").Logger()}
	srv.SetLoggerV2(l, false, false, false)
	e := &Embedded{srv: srv, opts: opts, log: l}
	go srv.Start()
	if err := e.Ready(embeddedReadyTimeout); err != nil {
		e.Shutdown()
		return nil, err
	}
	return e, nil
}

func (o EmbeddedOptions) serverOptions() (*server.Options, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded NATS server: no store dir")
	}
	opts := &server.Options{
		ServerName:         orDefault(o.ServerName, "blockflow"),
		Host:               orDefault(o.Host, defaultEmbeddedHost),
		Port:               randomIfZero(o.Port),
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamDomain:    o.JetStreamDomain,
		JetStreamMaxStore:  o.MaxStore,
		JetStreamMaxMemory: o.MaxMemory,
		NoSigs:             true,
		NoLog:              true,
	}
	if opts.JetStreamMaxStore <= 0 {
		opts.JetStreamMaxStore = DefaultEmbeddedMaxStore
	}
	if opts.JetStreamMaxMemory <= 0 {
		opts.JetStreamMaxMemory = DefaultEmbeddedMaxMemory
	}
	if c := o.Cluster; c != nil {
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: orDefault(c.Host, defaultEmbeddedHost), Port: c.Port}
		routes, err := parseURLs(c.Routes)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server routes: %w", err)
		}
		opts.Routes = routes
	}
	if l := o.LeafListen; l != nil {
		opts.LeafNode.Host = orDefault(l.Host, defaultEmbeddedHost)
		opts.LeafNode.Port = randomIfZero(l.Port)
	}
	if len(o.LeafRemotes) > 0 {
		urls, err := parseURLs(o.LeafRemotes)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS server leaf remotes: %w", err)
		}
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: urls}}
		opts.LeafNode.ReconnectInterval = time.Second
	}
	return opts, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func randomIfZero(port int) int {
	if port == 0 {
		return server.RANDOM_PORT
	}
	return port
}

func parseURLs(raw []string) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(raw))
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

// Ready waits until the server accepts clients and JetStream is enabled. It gives up
// early when the server reported a fatal error (it then never becomes ready).
func (e *Embedded) Ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if e.srv.ReadyForConnections(50*time.Millisecond) && e.srv.JetStreamEnabled() {
			return nil
		}
		if fatal := e.log.fatal.Load(); fatal != nil {
			return fmt.Errorf("embedded NATS server %s failed to start: %s", e.srv.Name(), *fatal)
		}
		if time.Now().After(deadline) {
			if last := e.log.lastError.Load(); last != nil {
				return fmt.Errorf("embedded NATS server %s not ready after %s: %s", e.srv.Name(), timeout, *last)
			}
			return fmt.Errorf("embedded NATS server %s not ready after %s", e.srv.Name(), timeout)
		}
	}
}

// Name is the server's name (ServerName).
func (e *Embedded) Name() string { return e.srv.Name() }

// ClientURL is the URL clients connect to, nats://host:port.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// LeafURL is the URL edge servers connect to as leaf nodes (nats-leaf://host:port), or ""
// without LeafListen.
func (e *Embedded) LeafURL() string {
	if e.opts.LeafNode.Port == 0 {
		return ""
	}
	// The server wrote the port it bound back into its options before it became ready.
	return "nats-leaf://" + net.JoinHostPort(e.opts.LeafNode.Host, strconv.Itoa(e.opts.LeafNode.Port))
}

// Shutdown stops the server and waits until it has.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLogger is nats-server's Logger over zerolog. Fatalf does not exit: the server
// reports startup failures (a port in use) through it and gives up starting.
type serverLogger struct {
	log              zerolog.Logger
	lastError, fatal atomic.Pointer[string]
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Info().Msgf(format, v...) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }

func (l *serverLogger) Errorf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.lastError.Store(&msg)
	l.log.Error().Msg(msg)
}

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.lastError.Store(&msg)
	l.fatal.Store(&msg)
	l.log.Error().Bool("fatal", true).Msg(msg)
}
