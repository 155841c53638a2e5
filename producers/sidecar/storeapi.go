package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/storeapi"
)

// DefaultRefreshInterval is how often a PrometheusSource asks Prometheus what it holds.
const DefaultRefreshInterval = 10 * time.Second

// lowestTimestampMetric is Prometheus's oldest sample time (ms), of its blocks or, without
// blocks, of its head; MaxInt64 when it holds nothing.
const lowestTimestampMetric = "prometheus_tsdb_lowest_timestamp"

// SourceOptions configure a PrometheusSource.
type SourceOptions struct {
	// PrometheusURL is the Prometheus server whose data is served.
	PrometheusURL string
	// Labels are the external labels (--label k=v); when empty, Prometheus's own
	// (global.external_labels), as for the blocks the sidecar ships.
	Labels map[string]string
	// RefreshInterval between checks of Prometheus (default DefaultRefreshInterval).
	RefreshInterval time.Duration
	HTTPClient      *http.Client // default http.DefaultClient
	Logger          zerolog.Logger
}

// PrometheusSource serves the data a Prometheus server still holds, its head and local
// blocks, as a StoreAPI source (storeapi.Source) of component type "sidecar": series
// through Prometheus's remote-read API with streamed XOR chunks, labels through its HTTP
// API, each series with the external labels. It is not ready (Info fails) until Prometheus
// first answered; afterwards it keeps the last known state while Prometheus is away, so
// Queriers see the failing reads (a partial response) rather than a vanished endpoint.
type PrometheusSource struct {
	opts SourceOptions
	base string
	log  zerolog.Logger
	now  func() time.Time

	mu    sync.Mutex
	ext   labels.Labels
	mint  int64
	ready bool
	err   error // of the last refresh
}

// NewPrometheusSource checks the options; Run makes the source ready.
func NewPrometheusSource(opts SourceOptions) (*PrometheusSource, error) {
	if opts.PrometheusURL == "" {
		return nil, errors.New("sidecar: no Prometheus URL for the StoreAPI")
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultRefreshInterval
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	return &PrometheusSource{
		opts: opts,
		base: strings.TrimSuffix(opts.PrometheusURL, "/"),
		log:  opts.Logger.With().Str(logging.FieldComponent, "storeapi").Logger(),
		now:  time.Now,
	}, nil
}

// Run checks Prometheus at once and then every RefreshInterval until ctx ends.
func (p *PrometheusSource) Run(ctx context.Context) error {
	t := time.NewTicker(p.opts.RefreshInterval)
	defer t.Stop()
	for {
		if err := p.Refresh(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn().Err(err).Msg("cannot reach Prometheus")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh asks Prometheus for its external labels (once, unless given) and the oldest
// sample it holds.
func (p *PrometheusSource) Refresh(ctx context.Context) error {
	err := p.refresh(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.err
	p.err = err
	if err == nil && was != nil && p.ready {
		p.log.Info().Msg("Prometheus is back")
	}
	return err
}

func (p *PrometheusSource) refresh(ctx context.Context) error {
	p.mu.Lock()
	ext := p.ext
	p.mu.Unlock()
	if ext.IsEmpty() {
		m := p.opts.Labels
		if len(m) == 0 {
			var err error
			if m, err = getExternalLabels(ctx, p.opts.HTTPClient, p.base+"/api/v1/status/config"); err != nil {
				return fmt.Errorf("external labels: %w", err)
			}
			if len(m) == 0 {
				return errNoLabels
			}
		}
		ext = labels.FromMap(m)
	}
	lowest, err := p.lowestTimestamp(ctx)
	if err != nil {
		return err
	}
	mint := lowest
	if lowest == math.MaxInt64 {
		// Nothing yet: whatever Prometheus appends from now on.
		mint = p.now().UnixMilli()
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ready {
		p.log.Info().Str("labels", ext.String()).Int64("min_time", mint).Msg("serving Prometheus's data")
	}
	p.ext, p.mint, p.ready = ext, mint, true
	return nil
}

// lowestTimestamp reads Prometheus's oldest sample time from its /metrics: a cheap call,
// unlike /api/v1/status/tsdb, which computes cardinality statistics.
func (p *PrometheusSource) lowestTimestamp(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := p.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("prometheus /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		value, ok := strings.CutPrefix(sc.Text(), lowestTimestampMetric+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("prometheus /metrics: %s: %w", lowestTimestampMetric, err)
		}
		if v >= math.MaxInt64 {
			return math.MaxInt64, nil
		}
		return int64(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("prometheus /metrics: %w", err)
	}
	return 0, fmt.Errorf("prometheus /metrics has no %s", lowestTimestampMetric)
}

// state returns the external labels and the oldest time, or an error until ready.
func (p *PrometheusSource) state() (labels.Labels, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ready {
		if p.err != nil {
			return labels.EmptyLabels(), 0, fmt.Errorf("prometheus not reached yet: %w", p.err)
		}
		return labels.EmptyLabels(), 0, errors.New("prometheus not reached yet")
	}
	return p.ext, p.mint, nil
}

// Info reports the external labels and the time range Prometheus holds: from its oldest
// sample on, open-ended, as the Thanos sidecar advertises it.
func (p *PrometheusSource) Info(context.Context) (storeapi.Info, error) {
	ext, mint, err := p.state()
	if err != nil {
		return storeapi.Info{}, err
	}
	return storeapi.Info{
		ComponentType: "sidecar",
		LabelSets:     []labels.Labels{ext},
		MinTime:       mint,
		MaxTime:       math.MaxInt64,
		TSDBInfos:     []storeapi.TSDBInfo{{Labels: ext, MinTime: mint, MaxTime: math.MaxInt64}},
	}, nil
}

// ChunkQuerier reads [mint, maxt] from Prometheus, with the external labels.
func (p *PrometheusSource) ChunkQuerier(mint, maxt int64) (storage.ChunkQuerier, error) {
	ext, _, err := p.state()
	if err != nil {
		return nil, err
	}
	q := &promQuerier{client: p.opts.HTTPClient, base: p.base, mint: mint, maxt: maxt}
	return storeapi.WithExternalLabels(q, ext), nil
}
