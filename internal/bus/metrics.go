package bus

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of one delivery, the result label of blockflow_stage_events_total.
const (
	resultOK         = "ok"
	resultRetry      = "retry"
	resultDeadLetter = "dead_letter"
)

// metrics are the stage metrics of one Bus, shared by every Run on it.
type metrics struct {
	events   *prometheus.CounterVec
	handle   *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

// newMetrics builds the vectors and registers them on reg (when not nil). A second Bus on
// the same registry shares the first one's vectors instead of failing.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blockflow_stage_events_total",
			Help: "Deliveries handled by a stage, by result (ok, retry, dead_letter).",
		}, []string{"stage", "result"}),
		handle: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blockflow_stage_handle_seconds",
			Help:    "Time a stage's handler took for one event.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10), // 10ms to ~44m
		}, []string{"stage"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blockflow_stage_in_flight",
			Help: "Events a stage is handling now in this process.",
		}, []string{"stage"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.events, err = register(reg, m.events); err != nil {
		return nil, err
	}
	if m.handle, err = register(reg, m.handle); err != nil {
		return nil, err
	}
	if m.inFlight, err = register(reg, m.inFlight); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register bus metrics: %w", err)
}

// stageMetrics are the children of one stage.
type stageMetrics struct {
	ok, retry, deadLetter prometheus.Counter
	handle                prometheus.Observer
	inFlight              prometheus.Gauge
}

func (m *metrics) stage(name string) stageMetrics {
	return stageMetrics{
		ok:         m.events.WithLabelValues(name, resultOK),
		retry:      m.events.WithLabelValues(name, resultRetry),
		deadLetter: m.events.WithLabelValues(name, resultDeadLetter),
		handle:     m.handle.WithLabelValues(name),
		inFlight:   m.inFlight.WithLabelValues(name),
	}
}
