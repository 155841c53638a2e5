// Package sidecar ships the blocks a Prometheus server cuts: it watches the TSDB directory,
// stages each new level-1 block in the staging object store and publishes block.ready, and
// records what it shipped in thanos.shipper.json so a restart ships nothing twice.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/fsnotify/fsnotify"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/logging"
	"github.com/blockflow/blockflow/internal/stage"
	"github.com/blockflow/blockflow/producers/ship"
	"github.com/blockflow/blockflow/schemas"
)

// ShipperFilename is the shipped-blocks file in the TSDB directory, named and shaped as
// the Thanos sidecar's, so Prometheus's --storage.tsdb.delay-compact-file.path can point at it.
const ShipperFilename = "thanos.shipper.json"

// DefaultInterval is how often the TSDB directory is scanned when no file event comes.
const DefaultInterval = 5 * time.Second

// Options configure a Sidecar.
type Options struct {
	// TSDBPath is Prometheus's --storage.tsdb.path.
	TSDBPath string
	// DataDir is the sidecar's own directory; blocks are hard-linked into DataDir/staging
	// while they are read. Put it on the same filesystem as TSDBPath, or files are copied.
	DataDir string
	// Labels are the external labels (--label k=v). When empty they are read from
	// Prometheus at PrometheusURL.
	Labels        map[string]string
	PrometheusURL string
	// Site names this producer in subjects and staging names; default SiteFromLabels.
	Site string
	// Interval between scans (default DefaultInterval); a new block directory also
	// triggers a scan at once.
	Interval   time.Duration
	Staging    ship.Staging
	Publisher  ship.Publisher
	HTTPClient *http.Client // for PrometheusURL; default http.DefaultClient
	Logger     zerolog.Logger
	Registerer prometheus.Registerer // nil: metrics are not registered
}

// Sidecar ships the blocks of one Prometheus TSDB directory.
type Sidecar struct {
	opts    Options
	log     zerolog.Logger
	metrics metrics
	now     func() time.Time

	mu      sync.Mutex // one pass at a time
	shipper *ship.Shipper
	shipped map[ulid.ULID]bool // nil until the shipper file is read
	retry   map[ulid.ULID]*retryState
	broken  map[ulid.ULID]bool // failed for good; not retried until restart
	// unreadable blocks are reported once, not on every pass.
	unreadable map[ulid.ULID]bool
}

type retryState struct {
	bo   backoff.BackOff
	next time.Time
}

// New checks the options. External labels from Prometheus are read by the first pass.
func New(opts Options) (*Sidecar, error) {
	switch {
	case opts.TSDBPath == "":
		return nil, errors.New("sidecar: TSDB path is empty")
	case opts.DataDir == "":
		return nil, errors.New("sidecar: data dir is empty")
	case opts.Staging == nil || opts.Publisher == nil:
		return nil, errors.New("sidecar: staging and publisher are required")
	case len(opts.Labels) == 0 && opts.PrometheusURL == "":
		return nil, errNoLabels
	}
	if opts.Site != "" {
		if err := ship.CheckSite(opts.Site); err != nil {
			return nil, fmt.Errorf("sidecar: %w", err)
		}
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	return &Sidecar{
		opts:    opts,
		log:     opts.Logger.With().Str(logging.FieldComponent, "sidecar").Logger(),
		metrics: newMetrics(opts.Registerer),
		now:     time.Now,
		retry:   make(map[ulid.ULID]*retryState),
		broken:  make(map[ulid.ULID]bool),

		unreadable: make(map[ulid.ULID]bool),
	}, nil
}

// Run ships blocks until ctx ends: a pass every Interval, and one as soon as a block
// directory appears. It returns an error only when external labels cannot be had.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.init(ctx); err != nil {
		return err
	}
	trigger := make(chan struct{}, 1)
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn().Err(err).Msg("no file notifications; scanning on the interval only")
	} else {
		defer w.Close()
		if err := w.Add(s.opts.TSDBPath); err != nil {
			s.log.Warn().Err(err).Msg("no file notifications; scanning on the interval only")
		}
		go forwardBlockEvents(ctx, w, trigger)
	}
	ticker := time.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	for {
		// Block errors are logged and counted by the pass; the next pass retries them.
		_, _ = s.SyncOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-trigger:
		}
	}
}

// forwardBlockEvents turns the creation of a block directory (Prometheus renames
// "<ulid>.tmp-for-creation" to "<ulid>") into a pending scan.
func forwardBlockEvents(ctx context.Context, w *fsnotify.Watcher, trigger chan<- struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !ev.Has(fsnotify.Create) {
				continue
			}
			if _, err := ulid.ParseStrict(filepath.Base(ev.Name)); err != nil {
				continue
			}
			select {
			case trigger <- struct{}{}:
			default: // a scan is already pending
			}
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
		}
	}
}

// init resolves the external labels and the site, once.
func (s *Sidecar) init(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shipper != nil {
		return nil
	}
	lbls := s.opts.Labels
	if len(lbls) == 0 {
		var err error
		if lbls, err = fetchExternalLabels(ctx, s.opts.HTTPClient, s.opts.PrometheusURL, s.log); err != nil {
			return fmt.Errorf("sidecar: %w", err)
		}
	}
	site := s.opts.Site
	if site == "" {
		site = ship.SiteFromLabels(lbls)
	}
	s.log = s.log.With().Str(logging.FieldSite, site).Logger()
	s.log.Info().Interface("labels", lbls).Msg("external labels")
	linkDir := filepath.Join(s.opts.DataDir, "staging")
	// Links left by a crash pin deleted blocks' disk space: drop them.
	if err := os.RemoveAll(linkDir); err != nil {
		return fmt.Errorf("sidecar: clean %s: %w", linkDir, err)
	}
	s.shipper = &ship.Shipper{
		Staging:   s.opts.Staging,
		Publisher: s.opts.Publisher,
		Site:      site,
		Labels:    lbls,
		Producer:  schemas.ProducerSidecar,
		LinkDir:   linkDir,
	}
	return nil
}

// SyncOnce runs one pass: it ships, oldest first, every complete level-1 block with
// samples that is not shipped yet, recording each in the shipper file as soon as it is
// shipped. It returns how many blocks it shipped and the errors of the blocks that failed
// (those are retried by later passes, on a backoff schedule per block).
func (s *Sidecar) SyncOnce(ctx context.Context) (int, error) {
	if err := s.init(ctx); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.shipper.LinkDir, 0o755); err != nil {
		return 0, fmt.Errorf("sidecar: %w", err)
	}
	s.loadShipped()

	var errs []error
	unreadable := make(map[ulid.ULID]bool)
	blocks, present, err := ship.Scan(s.opts.TSDBPath, func(id ulid.ULID, err error) {
		unreadable[id] = true
		if s.unreadable[id] {
			return
		}
		s.metrics.failures.Inc()
		s.log.Error().Err(err).Str(logging.FieldBlock, id.String()).Msg("skipping unreadable block")
		errs = append(errs, fmt.Errorf("block %s: %w", id, err))
	})
	if err != nil {
		s.log.Error().Err(err).Msg("cannot scan the TSDB directory")
		return 0, err
	}
	s.unreadable = unreadable
	// The shipper file lists only blocks still present, as in Thanos.
	dirty := false
	for id := range s.shipped {
		if !present[id] {
			delete(s.shipped, id)
			dirty = true
		}
	}
	for id := range s.retry {
		if !present[id] {
			delete(s.retry, id)
		}
	}
	for id := range s.broken {
		if !present[id] {
			delete(s.broken, id)
		}
	}

	shipped := 0
	for _, b := range blocks {
		if ctx.Err() != nil {
			break
		}
		id := b.Meta.ULID
		if s.shipped[id] || s.broken[id] || b.Meta.Compaction.Level > 1 || b.Meta.Stats.NumSamples == 0 {
			continue
		}
		if r := s.retry[id]; r != nil && s.now().Before(r.next) {
			continue
		}
		log := s.log.With().Str(logging.FieldBlock, id.String()).Logger()
		ev, err := s.shipper.Ship(ctx, b)
		if err != nil {
			s.metrics.failures.Inc()
			errs = append(errs, err)
			if stage.IsPermanent(err) {
				s.broken[id] = true
				log.Error().Err(err).Msg("cannot ship block; skipping it until restart")
				continue
			}
			r := s.retry[id]
			if r == nil {
				r = &retryState{bo: newRetryBackoff(s.opts.Interval)}
				s.retry[id] = r
			}
			wait := r.bo.NextBackOff()
			r.next = s.now().Add(wait)
			log.Warn().Err(err).Dur("retry_in", wait).Msg("ship failed")
			continue
		}
		delete(s.retry, id)
		s.shipped[id] = true
		shipped++
		s.metrics.shipped.Inc()
		s.metrics.lastShipped.Set(float64(s.now().UnixNano()) / 1e9)
		log.Info().Int64("min_time", b.Meta.MinTime).Int64("max_time", b.Meta.MaxTime).
			Int64("bytes", ship.Size(ev)).Msg("block shipped")
		// Record each block at once, not once per pass (Thanos #934): a crash between two
		// blocks must not ship the first again.
		if err := s.writeShipped(); err != nil {
			errs = append(errs, err)
		}
		dirty = false
	}
	if dirty {
		if err := s.writeShipped(); err != nil {
			errs = append(errs, err)
		}
	}
	return shipped, errors.Join(errs...)
}

// loadShipped reads the shipper file once. A missing or corrupt file starts empty: blocks
// are shipped again, which the upload worker turns into no-ops.
func (s *Sidecar) loadShipped() {
	if s.shipped != nil {
		return
	}
	path := filepath.Join(s.opts.TSDBPath, ShipperFilename)
	done, err := ship.ReadProgress(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		done = make(map[ulid.ULID]bool)
	case err != nil:
		s.log.Warn().Err(err).Msg("ignoring unreadable shipper file; blocks may be shipped again")
		done = make(map[ulid.ULID]bool)
	}
	s.shipped = done
}

func (s *Sidecar) writeShipped() error {
	path := filepath.Join(s.opts.TSDBPath, ShipperFilename)
	if err := ship.WriteProgress(path, s.shipped); err != nil {
		s.log.Error().Err(err).Msg("cannot write shipper file")
		return fmt.Errorf("sidecar: %w", err)
	}
	return nil
}

// newRetryBackoff spaces the retries of one failing block over passes.
func newRetryBackoff(interval time.Duration) backoff.BackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = interval
	bo.MaxInterval = 5 * time.Minute
	bo.MaxElapsedTime = 0 // a block is retried as long as it exists
	bo.Reset()
	return bo
}

type metrics struct {
	shipped     prometheus.Counter
	failures    prometheus.Counter
	lastShipped prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_sidecar_blocks_shipped_total",
			Help: "Blocks staged and announced with block.ready.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blockflow_sidecar_ship_failures_total",
			Help: "Attempts to ship a block that failed (retried on later passes).",
		}),
		lastShipped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "blockflow_sidecar_last_shipped_timestamp_seconds",
			Help: "Unix time at which the last block was shipped.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.shipped, m.failures, m.lastShipped)
	}
	return m
}
