package synth

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// OpenMetricsOptions shapes the file OpenMetrics writes. Zero fields take the defaults.
type OpenMetricsOptions struct {
	Start     time.Time     // first scrape, whole seconds; default DefaultStart
	Span      time.Duration // how much history; default 24h
	Interval  time.Duration // scrape interval, whole seconds; default DefaultInterval
	Instances int           // scraped instances; default 3
	Seed      uint64
}

// Stats describes what a generator wrote.
type Stats struct {
	Series  int
	Samples int
	// MinTime and MaxTime are the first and last sample's timestamps in milliseconds.
	MinTime, MaxTime int64
}

func (o OpenMetricsOptions) withDefaults() (OpenMetricsOptions, error) {
	if o.Start.IsZero() {
		o.Start = DefaultStart
	}
	if o.Span == 0 {
		o.Span = 24 * time.Hour
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Instances == 0 {
		o.Instances = 3
	}
	switch {
	case o.Start.UnixMilli()%1000 != 0:
		return o, fmt.Errorf("start %s is not a whole second", o.Start)
	case o.Interval <= 0 || o.Interval%time.Second != 0:
		return o, fmt.Errorf("interval %s is not a positive whole number of seconds", o.Interval)
	case o.Span < o.Interval:
		return o, fmt.Errorf("span %s is shorter than the interval %s", o.Span, o.Interval)
	case o.Instances < 0:
		return o, fmt.Errorf("negative instance count %d", o.Instances)
	}
	return o, nil
}

// OpenMetrics writes an OpenMetrics text file with timestamped samples, the input of
// `promtool tsdb create-blocks-from openmetrics`:
//   - http_requests_total{job="api",instance,status}: counters that reset when their
//     instance restarts (every few hours);
//   - temperature_celsius{job="sensors",instance,room}: gauges;
//   - request_duration_seconds{job="api",instance}: a classic histogram (_bucket{le},
//     _sum, _count) that resets with its instance.
//
// Each metric family is written once, each series' samples contiguously in time order,
// which is what OpenMetrics requires and what promtool's backfill relies on.
// Timestamps are whole seconds so that promtool's seconds-to-milliseconds conversion is
// exact.
func OpenMetrics(w io.Writer, opts OpenMetricsOptions) (Stats, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Stats{}, fmt.Errorf("openmetrics options: %w", err)
	}
	ow := &omWriter{
		w:        bufio.NewWriterSize(w, 1<<16),
		start:    o.Start.UnixMilli(),
		interval: o.Interval.Milliseconds(),
		n:        int(o.Span / o.Interval),
	}
	seed := mix(o.Seed)
	type instance struct {
		name     string
		offset   int64 // scrape offset within the interval, whole seconds
		restarts restarts
		key      uint64
	}
	instances := make([]instance, o.Instances)
	for i := range instances {
		key := mix(seed ^ uint64(i+1)<<32)
		instances[i] = instance{
			name:   fmt.Sprintf("api-%d:8080", i),
			offset: int64(i*4) % (ow.interval / 1000) * 1000,
			// A restart every 3 to 6 hours, at a different time of day per instance.
			restarts: restarts{
				every:  (3*3600 + int64(unit(key)*3*3600)) * 1000,
				offset: int64(unit(mix(key))*daySeconds) * 1000,
			},
			key: key,
		}
	}

	ow.family("http_requests", "counter", "", "HTTP requests served, by status code.")
	statuses := []struct {
		code string
		rate float64
	}{{"200", 12}, {"404", 0.6}, {"500", 0.15}}
	for _, in := range instances {
		for j, st := range statuses {
			c := counter{
				rate:     st.rate * (0.75 + unit(mix(in.key+uint64(j)))/2),
				phase:    2 * math.Pi * unit(mix(in.key^uint64(j+100))),
				restarts: in.restarts,
			}
			ow.series(in.offset, c.at, "http_requests_total",
				"instance", in.name, "job", "api", "status", st.code)
		}
	}

	ow.family("temperature_celsius", "gauge", "celsius", "Room temperature.")
	for i, in := range instances {
		g := gauge{
			mean: 19 + 4*unit(mix(in.key+7)), amplitude: 3, noise: 0.3,
			phase: 2 * math.Pi * unit(mix(in.key+8)), step: 0.01, min: math.Inf(-1), key: in.key,
		}
		ow.series(in.offset, g.at, "temperature_celsius",
			"instance", in.name, "job", "sensors", "room", fmt.Sprintf("r%d", i+1))
	}

	ow.family("request_duration_seconds", "histogram", "seconds", "HTTP request latency.")
	for _, in := range instances {
		h := newLatencyHistogram(10*(0.75+unit(mix(in.key+9))/2), in.restarts, in.key)
		ow.histogram(in.offset, h, "request_duration_seconds", "instance", in.name, "job", "api")
	}

	ow.write([]byte("# EOF\n"))
	if err := ow.w.Flush(); err != nil && ow.err == nil {
		ow.err = err
	}
	if ow.err != nil {
		return Stats{}, fmt.Errorf("write openmetrics: %w", ow.err)
	}
	return ow.stats, nil
}

// omWriter writes OpenMetrics lines, remembering the first write error.
type omWriter struct {
	w               *bufio.Writer
	start, interval int64 // milliseconds
	n               int   // samples per series
	buf             []byte
	stats           Stats
	err             error
}

func (ow *omWriter) write(b []byte) {
	if ow.err != nil {
		return
	}
	_, ow.err = ow.w.Write(b)
}

func (ow *omWriter) family(name, typ, unit, help string) {
	ow.buf = fmt.Appendf(ow.buf[:0], "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	if unit != "" {
		ow.buf = fmt.Appendf(ow.buf, "# UNIT %s %s\n", name, unit)
	}
	ow.write(ow.buf)
}

// series writes all samples of one series in time order.
func (ow *omWriter) series(offset int64, f sampleFunc, name string, labelPairs ...string) {
	prefix := seriesPrefix(name, labelPairs)
	for k := range ow.n {
		t := ow.start + offset + int64(k)*ow.interval
		ow.sample(prefix, t, f(t))
	}
	ow.stats.Series++
}

// histogram writes one classic histogram, a MetricPoint (buckets, _count, _sum) per scrape.
func (ow *omWriter) histogram(offset int64, h histogram, name string, labelPairs ...string) {
	buckets := make([][]byte, len(h.bounds))
	for i, b := range h.bounds {
		buckets[i] = seriesPrefix(name+"_bucket", append(labelPairs[:len(labelPairs):len(labelPairs)], "le", formatLe(b)))
	}
	count := seriesPrefix(name+"_count", labelPairs)
	sum := seriesPrefix(name+"_sum", labelPairs)
	values := make([]float64, len(h.bounds))
	for k := range ow.n {
		t := ow.start + offset + int64(k)*ow.interval
		s := h.at(t, values)
		for i, prefix := range buckets {
			ow.sample(prefix, t, values[i])
		}
		ow.sample(count, t, values[len(values)-1])
		ow.sample(sum, t, s)
	}
	ow.stats.Series += len(buckets) + 2
}

func (ow *omWriter) sample(prefix []byte, t int64, v float64) {
	ow.buf = append(ow.buf[:0], prefix...)
	ow.buf = append(ow.buf, ' ')
	ow.buf = strconv.AppendFloat(ow.buf, v, 'f', -1, 64)
	ow.buf = append(ow.buf, ' ')
	ow.buf = strconv.AppendInt(ow.buf, t/1000, 10)
	ow.buf = append(ow.buf, '\n')
	ow.write(ow.buf)
	if ow.stats.Samples == 0 || t < ow.stats.MinTime {
		ow.stats.MinTime = t
	}
	ow.stats.MaxTime = max(ow.stats.MaxTime, t)
	ow.stats.Samples++
}

var labelValueEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// seriesPrefix renders `name{k="v",...}` with the labels sorted by name.
func seriesPrefix(name string, labelPairs []string) []byte {
	if len(labelPairs)%2 != 0 {
		panic("synth: odd number of label strings")
	}
	type pair struct{ k, v string }
	pairs := make([]pair, 0, len(labelPairs)/2)
	for i := 0; i < len(labelPairs); i += 2 {
		pairs = append(pairs, pair{labelPairs[i], labelPairs[i+1]})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	b := []byte(name)
	for i, p := range pairs {
		if i == 0 {
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, `%s="%s"`, p.k, labelValueEscaper.Replace(p.v))
	}
	if len(pairs) > 0 {
		b = append(b, '}')
	}
	return b
}

// formatLe renders a bucket bound as OpenMetrics' canonical number ("1.0", "0.25", "+Inf"),
// which is also how Prometheus 3 stores le values.
func formatLe(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	s := strconv.FormatFloat(b, 'f', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}
