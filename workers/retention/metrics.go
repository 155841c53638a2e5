package retention

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	marked        *prometheus.CounterVec
	deleted       prometheus.Counter
	errors        prometheus.Counter
	todoDeletions prometheus.Gauge
}

// newMetrics registers the retention metrics on reg (nil: not registered).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		marked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_retention_blocks_marked_total",
			Help: "Blocks marked for deletion by the retention worker, by reason: retention, covered (compacted into another block).",
		}, []string{"reason"}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_retention_blocks_deleted_total",
			Help: "Blocks deleted from the bucket after their delete delay.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_retention_errors_total",
			Help: "Retention actions that failed and will be retried.",
		}),
		todoDeletions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_retention_todo_deletion_blocks",
			Help: "Blocks marked for deletion and not yet deleted (as thanos_compact_todo_deletion_blocks).",
		}),
	}
	for _, r := range []string{ReasonRetention, ReasonCovered} {
		m.marked.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.marked, m.deleted, m.errors, m.todoDeletions)
	}
	return m
}
