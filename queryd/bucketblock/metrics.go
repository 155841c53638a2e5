package bucketblock

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	cacheBytes       prometheus.Gauge
	cacheFiles       prometheus.Gauge
	evictions        prometheus.Counter
	downloads        prometheus.Counter
	downloadFailures prometheus.Counter
	downloadBytes    prometheus.Counter
	downloadSeconds  prometheus.Histogram
	rangeReads       prometheus.Counter
	rangeReadBytes   prometheus.Counter
	rangeReadErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		cacheBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_queryd_index_cache_bytes",
			Help: "Total size of the index files cached on local disk.",
		}),
		cacheFiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_queryd_index_cache_files",
			Help: "Number of index files cached on local disk.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_index_cache_evictions_total",
			Help: "Index files removed from local disk to stay within the cache size.",
		}),
		downloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_index_downloads_total",
			Help: "Index files downloaded from the bucket.",
		}),
		downloadFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_index_download_failures_total",
			Help: "Index downloads that failed.",
		}),
		downloadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_index_download_bytes_total",
			Help: "Bytes of index files downloaded from the bucket.",
		}),
		downloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blockflow_queryd_index_download_duration_seconds",
			Help:    "Time to download one index file.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}),
		rangeReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_chunk_range_reads_total",
			Help: "Range reads of chunk segments from the bucket.",
		}),
		rangeReadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_chunk_range_read_bytes_total",
			Help: "Bytes of chunk segments read from the bucket.",
		}),
		rangeReadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_queryd_chunk_range_read_failures_total",
			Help: "Range reads of chunk segments that failed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.cacheBytes, m.cacheFiles, m.evictions, m.downloads, m.downloadFailures,
			m.downloadBytes, m.downloadSeconds, m.rangeReads, m.rangeReadBytes, m.rangeReadErrors)
	}
	return m
}
