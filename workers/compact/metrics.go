package compact

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of one job, the result label of blockflow_compact_jobs_total.
const (
	resultCompacted = "compacted"
	resultResumed   = "resumed"    // a redelivery found the output committed and finished the job
	resultEmpty     = "empty"      // the inputs held no samples: they were marked, no output
	resultStale     = "stale"      // an input is no longer live: nothing to do
	resultNoCompact = "no_compact" // an input got a no-compact mark; dead-lettered
	resultInvalid   = "invalid"    // the job can never run; dead-lettered
	resultError     = "error"      // retried
)

// Metrics of the compaction stage, shared by the Workers of a process.
type Metrics struct {
	jobs     *prometheus.CounterVec
	samples  prometheus.Counter
	duration prometheus.Histogram
	bytes    *prometheus.CounterVec
}

// NewMetrics registers the compaction metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_compact_jobs_total",
			Help: "Compaction jobs handled, by result: compacted, resumed (a redelivery finished a committed job), empty, stale (inputs no longer live), no_compact (an input was marked no-compact; dead-lettered), invalid (dead-lettered), error (retried).",
		}, []string{"result"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_compact_samples_total",
			Help: "Samples written to compacted blocks.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockflow_compact_duration_seconds",
			Help:    "Time to handle one compaction job: download, compact, upload, record.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 16), // 100ms .. ~55m
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_compact_bytes_total",
			Help: "Bytes of block files moved by compaction, by direction: downloaded (inputs), uploaded (outputs).",
		}, []string{"direction"}),
	}
	for _, r := range []string{resultCompacted, resultResumed, resultEmpty, resultStale, resultNoCompact, resultInvalid, resultError} {
		m.jobs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.samples, m.duration, m.bytes)
	}
	return m
}

func (m *Metrics) observe(result string, took time.Duration) {
	if m == nil {
		return
	}
	m.jobs.WithLabelValues(result).Inc()
	m.duration.Observe(took.Seconds())
}

func (m *Metrics) addSamples(n uint64) {
	if m == nil {
		return
	}
	m.samples.Add(float64(n))
}

func (m *Metrics) addBytes(direction string, n int64) {
	if m == nil {
		return
	}
	m.bytes.WithLabelValues(direction).Add(float64(n))
}
