package planner

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	todo      prometheus.Gauge
	published prometheus.Counter
	leader    prometheus.Gauge
}

// newMetrics registers the planner's metrics on reg (nil: not registered).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		todo: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_planner_todo_compactions",
			Help: "Compactions the last plan found to do, queued or not (as thanos_compact_todo_compactions).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_planner_jobs_published_total",
			Help: "Compaction jobs published.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_planner_leader",
			Help: "1 while this process holds the planner lease and plans.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.todo, m.published, m.leader)
	}
	return m
}
