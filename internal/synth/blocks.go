package synth

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/index"
)

// samplesPerChunk is where Prometheus' head cuts a chunk at a steady scrape rate.
const samplesPerChunk = 120

// tmpSuffix marks a block directory still being written, as Prometheus names it, so a
// watcher of the directory treats a synthetic block exactly like one Prometheus cuts.
const tmpSuffix = ".tmp-for-creation"

// Spec describes a set of level-1 blocks of synthetic series, for tests and benchmarks.
// Zero fields take the defaults.
type Spec struct {
	Series     int               // number of series, at least 1
	Start      time.Time         // rounded down to a multiple of BlockRange; default DefaultStart
	Span       time.Duration     // rounded up to whole blocks; default BlockRange
	Interval   time.Duration     // default DefaultInterval
	BlockRange time.Duration     // default DefaultBlockRange
	Labels     map[string]string // added to every series, e.g. to tell data sets apart
	Seed       uint64
}

// specMetrics are the metric names WriteBlocks cycles through; counters end in _total.
var specMetrics = []string{"synth_requests_total", "synth_queue_depth", "synth_bytes_total", "synth_temperature"}

// WriteBlocks writes the blocks spec describes into dir, one per BlockRange-aligned range,
// and returns their metas in time order. Series i is named specMetrics[i%4] and labelled
// job="synth", instance="host-<n>", id="<i/4>" plus spec.Labels. Block ULIDs are derived
// from the spec and the range. Time that blocks in dir already cover is left alone, so
// writing the same spec again changes nothing.
func WriteBlocks(ctx context.Context, dir string, spec Spec) ([]tsdb.BlockMeta, error) {
	if spec.Series < 1 {
		return nil, fmt.Errorf("synth spec: series count %d < 1", spec.Series)
	}
	set, err := newBlockSet(spec.Start, spec.Span, spec.Interval, spec.BlockRange)
	if err != nil {
		return nil, fmt.Errorf("synth spec: %w", err)
	}
	seed := mix(spec.Seed)
	extra := labels.FromMap(spec.Labels)
	set.key = mix(seed ^ uint64(spec.Series))
	extra.Range(func(l labels.Label) {
		set.key = mix(set.key ^ hashString(l.Name) ^ mix(hashString(l.Value)))
	})
	b := labels.NewBuilder(labels.EmptyLabels())
	for i := range spec.Series {
		key := mix(seed ^ uint64(i))
		id := i / len(specMetrics)
		b.Reset(extra)
		b.Set(model.MetricNameLabel, specMetrics[i%len(specMetrics)])
		b.Set("job", "synth")
		b.Set("instance", fmt.Sprintf("host-%d", id/16))
		b.Set("id", fmt.Sprint(id))
		var at sampleFunc
		if i%2 == 0 {
			at = counter{
				rate:  1 + 20*unit(key),
				phase: 2 * math.Pi * unit(mix(key)),
				// A restart every 6 to 30 hours.
				restarts: restarts{every: (6 + int64(24*unit(mix(key+1)))) * 3600 * 1000, offset: int64(unit(mix(key+2)) * 86400e3)},
			}.at
		} else {
			at = gauge{
				mean: 100 * unit(key), amplitude: 10 * unit(mix(key)), noise: 1,
				phase: 2 * math.Pi * unit(mix(key+1)), step: 0.01, min: 0, key: key,
			}.at
		}
		set.series = append(set.series, genSeries{lset: b.Labels(), at: at, offset: int64(unit(mix(key+3)) * float64(set.interval))})
	}
	return set.write(ctx, dir)
}

func hashString(s string) uint64 {
	h := uint64(len(s))
	for len(s) >= 8 {
		h = mix(h ^ binary.LittleEndian.Uint64([]byte(s[:8])))
		s = s[8:]
	}
	for _, c := range []byte(s) {
		h = mix(h ^ uint64(c))
	}
	return h
}

// genSeries is one generated series.
type genSeries struct {
	lset   labels.Labels
	at     sampleFunc
	offset int64 // scrape offset within the interval, milliseconds
}

// blockSet is the samples of some series over [mint, maxt), to be cut into blocks that
// never cross a multiple of blockRange.
type blockSet struct {
	series               []genSeries
	mint, maxt           int64 // milliseconds
	blockRange, interval int64
	key                  uint64 // mixed into block ULIDs
}

// newBlockSet returns the set over start and span rounded out to whole block ranges.
func newBlockSet(start time.Time, span, interval, blockRange time.Duration) (blockSet, error) {
	if start.IsZero() {
		start = DefaultStart
	}
	if interval == 0 {
		interval = DefaultInterval
	}
	if blockRange == 0 {
		blockRange = DefaultBlockRange
	}
	if span == 0 {
		span = blockRange
	}
	switch {
	case interval < time.Millisecond || blockRange < interval:
		return blockSet{}, fmt.Errorf("interval %s must be at least 1ms and at most the block range %s", interval, blockRange)
	case span < 0:
		return blockSet{}, fmt.Errorf("negative span %s", span)
	}
	s := blockSet{blockRange: blockRange.Milliseconds(), interval: interval.Milliseconds()}
	s.mint = floorTo(start.UnixMilli(), s.blockRange)
	s.maxt = s.mint + ceilTo(span.Milliseconds(), s.blockRange)
	return s, nil
}

// mod is t modulo d, in [0, d) also for negative t.
func mod(t, d int64) int64 {
	r := t % d
	if r < 0 {
		r += d
	}
	return r
}

func floorTo(t, d int64) int64 { return t - mod(t, d) }

func ceilTo(t, d int64) int64 { return -floorTo(-t, d) }

// errNoSamples says a range holds no sample, so no block is cut for it (as in Prometheus).
var errNoSamples = errors.New("no samples in range")

// write fills the parts of [mint, maxt) that no block in dir covers yet with new blocks,
// one per gap within each blockRange-aligned range, so that nothing overlaps what is
// there. It returns the metas of every block in dir that overlaps [mint, maxt), written
// now or before, in time order.
func (s blockSet) write(ctx context.Context, dir string) ([]tsdb.BlockMeta, error) {
	slices.SortFunc(s.series, func(a, b genSeries) int { return labels.Compare(a.lset, b.lset) })
	for i := 1; i < len(s.series); i++ {
		if labels.Equal(s.series[i-1].lset, s.series[i].lset) {
			return nil, fmt.Errorf("duplicate series %s", s.series[i].lset)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create blocks dir: %w", err)
	}
	existing, err := readBlockMetas(dir)
	if err != nil {
		return nil, err
	}
	for r := floorTo(s.mint, s.blockRange); r < s.maxt; r += s.blockRange {
		for _, gap := range uncovered(max(r, s.mint), min(r+s.blockRange, s.maxt), existing) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			id := s.blockID(gap[0], gap[1])
			meta, err := s.writeBlock(ctx, dir, id, gap[0], gap[1])
			if errors.Is(err, errNoSamples) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("block %s: %w", id, err)
			}
			existing = append(existing, meta)
		}
	}
	var metas []tsdb.BlockMeta
	for _, m := range existing {
		if m.MinTime < s.maxt && m.MaxTime > s.mint {
			metas = append(metas, m)
		}
	}
	slices.SortFunc(metas, func(a, b tsdb.BlockMeta) int { return cmp.Compare(a.MinTime, b.MinTime) })
	return metas, nil
}

// uncovered returns the parts of [lo, hi) that no block in metas covers.
func uncovered(lo, hi int64, metas []tsdb.BlockMeta) [][2]int64 {
	sorted := slices.Clone(metas)
	slices.SortFunc(sorted, func(a, b tsdb.BlockMeta) int { return cmp.Compare(a.MinTime, b.MinTime) })
	var gaps [][2]int64
	for _, m := range sorted {
		if m.MaxTime <= lo || m.MinTime >= hi {
			continue
		}
		if m.MinTime > lo {
			gaps = append(gaps, [2]int64{lo, m.MinTime})
		}
		lo = max(lo, m.MaxTime)
	}
	if lo < hi {
		gaps = append(gaps, [2]int64{lo, hi})
	}
	return gaps
}

// blockID derives the ULID of the block over [mint, maxt) from the set: the time part is
// maxt (about when Prometheus would have cut it), the entropy a hash.
func (s blockSet) blockID(mint, maxt int64) ulid.ULID {
	var id ulid.ULID
	var entropy [16]byte
	h := mix(s.key ^ uint64(mint) ^ mix(uint64(maxt)))
	binary.BigEndian.PutUint64(entropy[:8], h)
	binary.BigEndian.PutUint64(entropy[8:], mix(h))
	// Both calls only fail on out-of-range input: a time after year 10889 or short entropy.
	_ = id.SetTime(uint64(maxt))
	_ = id.SetEntropy(entropy[:10])
	return id
}

// writeBlock writes block id over [mint, maxt) the way Prometheus' compactor lays it out:
// chunks of 120 samples, the index, then meta.json, in a temporary directory renamed into
// place at the end.
func (s blockSet) writeBlock(ctx context.Context, dir string, id ulid.ULID, mint, maxt int64) (meta tsdb.BlockMeta, err error) {
	tmp := filepath.Join(dir, id.String()+tmpSuffix)
	if err := os.RemoveAll(tmp); err != nil {
		return meta, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return meta, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	cw, err := chunks.NewWriter(filepath.Join(tmp, "chunks"))
	if err != nil {
		return meta, fmt.Errorf("chunk writer: %w", err)
	}
	defer func() {
		if cw != nil {
			cw.Close()
		}
	}()
	iw, err := index.NewWriter(ctx, filepath.Join(tmp, "index"))
	if err != nil {
		return meta, fmt.Errorf("index writer: %w", err)
	}
	defer func() {
		if iw != nil {
			iw.Close()
		}
	}()

	for _, sym := range s.symbols() {
		if err := iw.AddSymbol(sym); err != nil {
			return meta, fmt.Errorf("add symbol: %w", err)
		}
	}
	meta = tsdb.BlockMeta{
		ULID: id, MinTime: mint, MaxTime: maxt, Version: 1,
		Compaction: tsdb.BlockMetaCompaction{Level: 1, Sources: []ulid.ULID{id}},
	}
	var chks []chunks.Meta
	for ref, sr := range s.series {
		chks, err = s.chunks(chks[:0], sr, mint, maxt)
		if err != nil {
			return meta, err
		}
		if len(chks) == 0 {
			continue
		}
		if err := cw.WriteChunks(chks...); err != nil {
			return meta, fmt.Errorf("write chunks: %w", err)
		}
		if err := iw.AddSeries(storage.SeriesRef(ref), sr.lset, chks...); err != nil {
			return meta, fmt.Errorf("add series: %w", err)
		}
		meta.Stats.NumSeries++
		meta.Stats.NumChunks += uint64(len(chks))
		for _, c := range chks {
			meta.Stats.NumSamples += uint64(c.Chunk.NumSamples())
		}
	}
	if meta.Stats.NumSamples == 0 {
		return meta, errNoSamples
	}
	meta.Stats.NumFloatSamples = meta.Stats.NumSamples
	err = cw.Close()
	cw = nil
	if err != nil {
		return meta, fmt.Errorf("close chunks: %w", err)
	}
	err = iw.Close()
	iw = nil
	if err != nil {
		return meta, fmt.Errorf("close index: %w", err)
	}
	if err := writeBlockMeta(tmp, meta); err != nil {
		return meta, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, id.String())); err != nil {
		return meta, fmt.Errorf("rename block into place: %w", err)
	}
	return meta, nil
}

// chunks appends the XOR chunks of one series over [mint, maxt) to chks.
func (s blockSet) chunks(chks []chunks.Meta, sr genSeries, mint, maxt int64) ([]chunks.Meta, error) {
	var app chunkenc.Appender
	// From the first scrape at or after mint.
	for t := mint + mod(sr.offset-mint, s.interval); t < maxt; t += s.interval {
		if app == nil || chks[len(chks)-1].Chunk.NumSamples() == samplesPerChunk {
			c := chunkenc.NewXORChunk()
			var err error
			if app, err = c.Appender(); err != nil {
				return chks, fmt.Errorf("chunk appender: %w", err)
			}
			chks = append(chks, chunks.Meta{Chunk: c, MinTime: t})
		}
		app.Append(0, t, sr.at(t))
		chks[len(chks)-1].MaxTime = t
	}
	return chks, nil
}

// symbols returns every label name and value of the set, sorted and unique.
func (s blockSet) symbols() []string {
	seen := map[string]struct{}{}
	for _, sr := range s.series {
		sr.lset.Range(func(l labels.Label) {
			seen[l.Name] = struct{}{}
			seen[l.Value] = struct{}{}
		})
	}
	syms := make([]string, 0, len(seen))
	for sym := range seen {
		syms = append(syms, sym)
	}
	slices.Sort(syms)
	return syms
}

// writeBlockMeta writes meta.json as Prometheus does: tab-indented, no thanos section.
func writeBlockMeta(dir string, meta tsdb.BlockMeta) error {
	data, err := json.MarshalIndent(meta, "", "\t")
	if err != nil {
		return fmt.Errorf("encode meta.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meta.json"), data, 0o644); err != nil {
		return fmt.Errorf("write meta.json: %w", err)
	}
	return nil
}

// readBlockMetas reads the meta.json of every block directory in dir.
func readBlockMetas(dir string) ([]tsdb.BlockMeta, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read blocks dir: %w", err)
	}
	var metas []tsdb.BlockMeta
	for _, e := range entries {
		if _, err := ulid.ParseStrict(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "meta.json"))
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", e.Name(), err)
		}
		var meta tsdb.BlockMeta
		if err := json.Unmarshal(data, &meta); err != nil {
			return nil, fmt.Errorf("block %s: parse meta.json: %w", e.Name(), err)
		}
		metas = append(metas, meta)
	}
	return metas, nil
}
