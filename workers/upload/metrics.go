package upload

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the upload stage, shared by every Worker of a process.
type Metrics struct {
	blocks   *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
}

// NewMetrics registers the upload metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		blocks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_upload_blocks_total",
			Help: "block.ready events handled, by result: uploaded, duplicate (already in the bucket), invalid (dead-lettered), error (retried).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_upload_bytes_total",
			Help: "Bytes of block files written to the bucket.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockflow_upload_duration_seconds",
			Help:    "Time to handle one block.ready event: download, verify, upload, record.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14), // 50ms .. ~7m
		}),
	}
	for _, r := range []string{resultUploaded, resultDuplicate, resultInvalid, resultError} {
		m.blocks.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.blocks, m.bytes, m.duration)
	}
	return m
}

func (m *Metrics) observe(result string, took time.Duration) {
	if m == nil {
		return
	}
	m.blocks.WithLabelValues(result).Inc()
	m.duration.Observe(took.Seconds())
}

func (m *Metrics) addBytes(n int64) {
	if m == nil {
		return
	}
	m.bytes.Add(float64(n))
}
