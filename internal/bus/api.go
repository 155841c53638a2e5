// Package bus is blockflow's only importer of nats.go: the streams, the catalogue KV, the
// staging object store, the consumer loop with its ack discipline, and an embedded
// nats-server for dev, tests, clusters and leaf nodes.
//
// A stage never sees NATS: it is a Handler of one typed event. Run owns fetching,
// InProgress heartbeats, acks, retries (NakWithDelay on a backoff/v4 schedule) and
// dead-lettering (a copy in the DLQ stream, then Term with the reason).
package bus

import (
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockflow/blockflow/internal/stage"
)

// Default names; the subject prefix is configurable (Config.Prefix).
const (
	StreamEvents    = "EVENTS"
	StreamJobs      = "JOBS"
	StreamDLQ       = "DLQ"
	CatalogueBucket = "blockflow-catalogue"
	StagingBucket   = "blockflow-staging"
	DefaultPrefix   = "blockflow"
)

// Config says how to reach NATS. Credentials are never logged.
type Config struct {
	// URL is one or more comma-separated server URLs.
	URL string
	// Name is the client connection name shown by the server.
	Name string
	// CredsFile is a NATS .creds file; User/Password and Token are alternatives.
	CredsFile string
	User      string
	Password  string
	Token     string
	// TLS: a CA to trust, and a client certificate.
	TLSCA, TLSCert, TLSKey string
	// Prefix is the first subject token (default "blockflow").
	Prefix string
	// Replicas for streams, the KV and the object store (default 1; 3 on a cluster).
	Replicas int
	// Domain is the JetStream domain to talk to ("" = the local one).
	Domain string
	// Registerer receives the bus metrics (nil: none).
	Registerer prometheus.Registerer
}

// Handler is a stage: it gets one decoded, valid event and returns nil when the effect is
// durable. An error wrapped by Permanent dead-letters the event; any other error retries it.
// It lives in internal/stage so stages need not import the bus.
type Handler[E any] = stage.Handler[E]

// ConsumerSpec describes one stage's durable consumer and this process's share of the pool.
type ConsumerSpec struct {
	// Stream is StreamEvents or StreamJobs.
	Stream string
	// Durable is the consumer (and stage) name, shared by the whole pool: "upload", ...
	Durable string
	// FilterSubjects select the events this stage takes.
	FilterSubjects []string
	// Slots is how many events this process handles at once (default 1).
	Slots int
	// AckWait is the lease on a delivered event (default 30s); Run sends InProgress every AckWait/3.
	AckWait time.Duration
	// Attempts is how many deliveries a retried event gets before it is dead-lettered (default 20).
	Attempts int
	// Backoff makes the retry schedule (default exponential from 1s to 5m, with jitter).
	Backoff func() backoff.BackOff
}

// Permanent and IsPermanent live in internal/stage so stages need not import the bus.
var (
	// Permanent marks err as one that no retry can fix: the event goes to the DLQ with err as the reason.
	Permanent = stage.Permanent
	// IsPermanent reports whether err (or an error it wraps) was marked by Permanent.
	IsPermanent = stage.IsPermanent
)
