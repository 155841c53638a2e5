package blockset

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blockflow/blockflow/schemas"
)

type metrics struct {
	blocks        *prometheus.GaugeVec
	invalid       prometheus.Counter
	watchRestarts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, queryable func() float64) *metrics {
	m := &metrics{
		blocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blockflow_queryd_catalogue_blocks",
			Help: "Blocks in the catalogue by state (deleted blocks are forgotten).",
		}, []string{"state"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_catalogue_invalid_records_total",
			Help: "Catalogue records ignored because they are invalid or unreadable.",
		}),
		watchRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_catalogue_watch_restarts_total",
			Help: "Times the catalogue watch ended and was started again.",
		}),
	}
	m.blocks.WithLabelValues(schemas.StateLive)
	m.blocks.WithLabelValues(schemas.StateMarked)
	if reg != nil {
		reg.MustRegister(m.blocks, m.invalid, m.watchRestarts, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "blockflow_queryd_queryable_blocks",
			Help: "Blocks that queries read: live and deduplicated, or marked and not yet covered.",
		}, queryable))
	}
	return m
}
