package downsample

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics of the downsample stage, shared by every Worker of a process.
type Metrics struct {
	jobs     *prometheus.CounterVec
	samples  prometheus.Counter
	duration prometheus.Histogram
}

// NewMetrics registers the downsample metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_downsample_jobs_total",
			Help: "Downsample jobs handled, by result: downsampled, duplicate (output already in the bucket), invalid (dead-lettered), error (retried).",
		}, []string{"result"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_downsample_input_samples_total",
			Help: "Raw or aggregated samples read by downsample jobs.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockflow_downsample_duration_seconds",
			Help:    "Time to handle one downsample job: download, downsample, upload, record.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 15), // 100ms .. ~27m
		}),
	}
	for _, r := range []string{resultDownsampled, resultDuplicate, resultInvalid, resultError} {
		m.jobs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.jobs, m.samples, m.duration)
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
