package synth

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/blockflow/blockflow/internal/testenv"
)

// readDB opens every block in dir with the tsdb package and returns their metas (in
// time order) and all series matching the matchers, keyed by their label string.
func readDB(t *testing.T, dir string, ms ...*labels.Matcher) ([]tsdb.BlockMeta, map[string]series) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var metas []tsdb.BlockMeta
	var queriers []storage.Querier
	for _, e := range entries {
		b, err := tsdb.OpenBlock(promslog.NewNopLogger(), filepath.Join(dir, e.Name()), nil, nil)
		if err != nil {
			t.Fatalf("open block: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		q, err := tsdb.NewBlockQuerier(b, math.MinInt64, math.MaxInt64)
		if err != nil {
			t.Fatalf("querier: %v", err)
		}
		metas = append(metas, b.Meta())
		queriers = append(queriers, q)
	}
	sort.Slice(metas, func(i, j int) bool { return metas[i].MinTime < metas[j].MinTime })
	q := storage.NewMergeQuerier(queriers, nil, storage.ChainedSeriesMerge)
	defer q.Close()
	all := map[string]series{}
	ss := q.Select(context.Background(), true, nil, ms...)
	for ss.Next() {
		s := ss.At()
		iter := s.Iterator(nil)
		var vals []float64
		prevT := int64(math.MinInt64)
		for iter.Next() != 0 {
			ts, v := iter.At()
			if ts <= prevT {
				t.Fatalf("%s: timestamps not increasing: %d after %d", s.Labels(), ts, prevT)
			}
			prevT = ts
			vals = append(vals, v)
		}
		if err := iter.Err(); err != nil {
			t.Fatalf("iterate %s: %v", s.Labels(), err)
		}
		all[s.Labels().String()] = series{s.Labels(), vals}
	}
	if err := ss.Err(); err != nil {
		t.Fatalf("select: %v", err)
	}
	return metas, all
}

type series struct {
	lset labels.Labels
	vals []float64
}

func countResets(vals []float64) int {
	n := 0
	for i := 1; i < len(vals); i++ {
		if vals[i] < vals[i-1] {
			n++
		}
	}
	return n
}

func TestOpenMetricsIsDeterministic(t *testing.T) {
	opts := OpenMetricsOptions{Span: 2 * time.Hour, Seed: 7}
	var a, b bytes.Buffer
	if _, err := OpenMetrics(&a, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenMetrics(&b, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes with the same options differ")
	}
	opts.Seed = 8
	var c bytes.Buffer
	if _, err := OpenMetrics(&c, opts); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("another seed gives the same file")
	}
	if !bytes.HasSuffix(a.Bytes(), []byte("# EOF\n")) {
		t.Fatal("file does not end with # EOF")
	}
}

func TestOpenMetricsRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]OpenMetricsOptions{
		"fractional start":    {Start: DefaultStart.Add(500 * time.Millisecond)},
		"fractional interval": {Interval: 1500 * time.Millisecond},
		"span below interval": {Span: time.Second},
		"negative instances":  {Instances: -1},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := OpenMetrics(&bytes.Buffer{}, opts); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestOpenMetricsPromtool feeds the file to the real promtool and reads the blocks back.
func TestOpenMetricsPromtool(t *testing.T) {
	promtool := testenv.Bin(t, "promtool")
	dir := t.TempDir()
	file := filepath.Join(dir, "metrics.om")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	span := 12 * time.Hour
	stats, err := OpenMetrics(f, OpenMetricsOptions{Span: span, Instances: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// 3 statuses and 1 temperature per instance, 12 buckets + _sum + _count.
	if want := 2 * (3 + 1 + 14); stats.Series != want {
		t.Fatalf("stats.Series = %d, want %d", stats.Series, want)
	}
	out := filepath.Join(dir, "blocks")
	cmd := exec.Command(promtool, "tsdb", "create-blocks-from", "openmetrics", file, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, b)
	}

	metas, series := readDB(t, out, labels.MustNewMatcher(labels.MatchRegexp, model.MetricNameLabel, ".+"))
	if want := int(span / DefaultBlockRange); len(metas) != want {
		t.Errorf("%d blocks, want %d", len(metas), want)
	}
	var samples uint64
	for _, m := range metas {
		samples += m.Stats.NumSamples
	}
	if samples != uint64(stats.Samples) {
		t.Errorf("blocks hold %d samples, file has %d", samples, stats.Samples)
	}
	if len(series) != stats.Series {
		t.Errorf("blocks hold %d series, file has %d", len(series), stats.Series)
	}
	var counters, resets int
	for name, s := range series {
		if len(s.vals) != int(span/DefaultInterval) {
			t.Errorf("%s: %d samples, want %d", name, len(s.vals), span/DefaultInterval)
		}
		if n := s.lset.Get(model.MetricNameLabel); n == "http_requests_total" || n == "request_duration_seconds_count" {
			counters++
			resets += countResets(s.vals)
		}
	}
	// Instances restart every 3 to 6 hours, so 12h holds at least one reset per counter.
	if resets < counters {
		t.Errorf("%d resets over %d counters, want at least one each", resets, counters)
	}
}

func TestWriteDemoBlocks(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 4, 17, 42, 0, 0, time.UTC)
	metas, err := WriteDemoBlocks(context.Background(), dir, now, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	blockRange := DefaultBlockRange.Milliseconds()
	end := time.Date(2026, 3, 4, 16, 0, 0, 0, time.UTC).UnixMilli()
	if len(metas) != 24 {
		t.Fatalf("%d blocks for 48h, want 24", len(metas))
	}
	for i, m := range metas {
		wantMin := end - int64(24-i)*blockRange
		if m.MinTime != wantMin || m.MaxTime != wantMin+blockRange {
			t.Errorf("block %d covers [%d, %d), want [%d, %d)", i, m.MinTime, m.MaxTime, wantMin, wantMin+blockRange)
		}
		if m.Compaction.Level != 1 || m.Stats.NumSeries != 9 {
			t.Errorf("block %d: level %d, %d series; want level 1, 9 series", i, m.Compaction.Level, m.Stats.NumSeries)
		}
	}

	opened, series := readDB(t, dir, labels.MustNewMatcher(labels.MatchEqual, "job", "test-api"))
	if len(opened) != len(metas) || len(series) != 9 {
		t.Fatalf("tsdb opens %d blocks with %d series, want %d with 9", len(opened), len(series), len(metas))
	}
	for name, s := range series {
		if len(s.vals) != 48*240 {
			t.Errorf("%s: %d samples, want %d", name, len(s.vals), 48*240)
		}
	}
	for _, st := range []string{"200", "500"} {
		name := `{__name__="request_count_total", instance="test-api-0:8080", job="test-api", status="` + st + `"}`
		if r := countResets(series[name].vals); r < 2 {
			t.Errorf("%s: %d resets in 48h, want at least 2", name, r)
		}
	}

	// A later call adds only the new range and keeps the existing blocks.
	again, err := WriteDemoBlocks(context.Background(), dir, now.Add(2*time.Hour), 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 24 || again[0].ULID != metas[1].ULID || again[22].ULID != metas[23].ULID {
		t.Fatalf("a later call did not reuse the existing blocks")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 25 {
		t.Fatalf("%d entries in the dir, want 25 blocks", len(entries))
	}
}

func TestWriteBlocks(t *testing.T) {
	tests := []struct {
		name       string
		spec       Spec
		wantBlocks int
	}{
		{"one block", Spec{Series: 100}, 1},
		{"span rounded up, unaligned start", Spec{Series: 10, Start: DefaultStart.Add(time.Hour), Span: 3 * time.Hour}, 2},
		{"one minute interval, 1h blocks", Spec{Series: 3, Span: 3 * time.Hour, Interval: time.Minute, BlockRange: time.Hour}, 3},
		{"extra labels", Spec{Series: 8, Labels: map[string]string{"cluster": "a"}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			metas, err := WriteBlocks(context.Background(), dir, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if len(metas) != tc.wantBlocks {
				t.Fatalf("%d blocks, want %d", len(metas), tc.wantBlocks)
			}
			_, series := readDB(t, dir, labels.MustNewMatcher(labels.MatchEqual, "job", "synth"))
			if len(series) != tc.spec.Series {
				t.Fatalf("%d series, want %d", len(series), tc.spec.Series)
			}
			interval := tc.spec.Interval
			if interval == 0 {
				interval = DefaultInterval
			}
			blockRange := tc.spec.BlockRange
			if blockRange == 0 {
				blockRange = DefaultBlockRange
			}
			for name, s := range series {
				if want := tc.wantBlocks * int(blockRange/interval); len(s.vals) != want {
					t.Fatalf("%s: %d samples, want %d", name, len(s.vals), want)
				}
				for k, v := range tc.spec.Labels {
					if s.lset.Get(k) != v {
						t.Fatalf("%s lacks %s=%q", name, k, v)
					}
				}
			}
			// Same spec, same blocks: nothing is rewritten.
			again, err := WriteBlocks(context.Background(), dir, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			for i := range metas {
				if again[i].ULID != metas[i].ULID {
					t.Fatalf("block %d: ULID %s, then %s", i, metas[i].ULID, again[i].ULID)
				}
			}
		})
	}
}

func TestWriteBlocksRejectsBadSpec(t *testing.T) {
	for name, spec := range map[string]Spec{
		"no series":             {},
		"interval above range":  {Series: 1, Interval: 3 * time.Hour},
		"negative span":         {Series: 1, Span: -time.Hour},
		"sub-millisecond steps": {Series: 1, Interval: time.Microsecond},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := WriteBlocks(context.Background(), t.TempDir(), spec); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func BenchmarkWriteBlocks(b *testing.B) {
	for _, series := range []int{10_000, 100_000} {
		b.Run("series="+strconv.Itoa(series), func(b *testing.B) {
			for b.Loop() {
				if _, err := WriteBlocks(context.Background(), b.TempDir(), Spec{Series: series}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(series*int(DefaultBlockRange/DefaultInterval))*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

func BenchmarkWriteDemoBlocks10d(b *testing.B) {
	now := time.Date(2026, 3, 4, 17, 42, 0, 0, time.UTC)
	for b.Loop() {
		if _, err := WriteDemoBlocks(context.Background(), b.TempDir(), now, 10*24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteDemoRecent follows `blockflow dev --demo`: history, then small blocks every
// minute, then a restart hours later. Blocks never overlap or cross a 2h boundary, and
// every series ends up with one sample every 15s, no gap, no duplicate.
func TestWriteDemoRecent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := time.Date(2026, 3, 4, 17, 42, 0, 0, time.UTC)
	if _, err := WriteDemoBlocks(ctx, dir, start, 4*time.Hour); err != nil {
		t.Fatal(err)
	}
	boundary := time.Date(2026, 3, 4, 18, 0, 0, 0, time.UTC)

	steps := []struct {
		now                time.Time
		wantMin, wantMax   time.Time
		wantNothingWritten bool
	}{
		// A zero from starts where the history ends.
		{now: start, wantMin: start.Truncate(2 * time.Hour), wantMax: start},
		{now: start.Add(time.Minute), wantMin: start, wantMax: start.Add(time.Minute)},
		// No time passed: nothing to cut.
		{now: start.Add(time.Minute), wantMin: start.Add(time.Minute), wantMax: start.Add(time.Minute), wantNothingWritten: true},
		// Two seconds: only the instance scraped on the minute has a sample.
		{now: start.Add(time.Minute + 2*time.Second), wantMin: start.Add(time.Minute), wantMax: start.Add(time.Minute + 2*time.Second)},
		// Across a 2h boundary: two blocks, the newest is returned.
		{now: boundary.Add(3 * time.Minute), wantMin: boundary, wantMax: boundary.Add(3 * time.Minute)},
	}
	from := time.Time{}
	for i, st := range steps {
		meta, err := WriteDemoRecent(ctx, dir, from, st.now)
		if err != nil {
			t.Fatal(err)
		}
		if meta.MinTime != st.wantMin.UnixMilli() || meta.MaxTime != st.wantMax.UnixMilli() {
			t.Fatalf("step %d: block [%s, %s), want [%s, %s)", i,
				time.UnixMilli(meta.MinTime).UTC(), time.UnixMilli(meta.MaxTime).UTC(), st.wantMin, st.wantMax)
		}
		if (meta.ULID == ulid.ULID{}) != st.wantNothingWritten {
			t.Fatalf("step %d: ULID %s, want a block written: %v", i, meta.ULID, !st.wantNothingWritten)
		}
		from = time.UnixMilli(meta.MaxTime)
	}

	// A restart 5h later: the history fills what the small blocks do not cover, then the
	// live blocks go on from the start of the current range.
	later := boundary.Add(5 * time.Hour)
	if _, err := WriteDemoBlocks(ctx, dir, later, 8*time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteDemoRecent(ctx, dir, time.Time{}, later); err != nil {
		t.Fatal(err)
	}

	metas, series := readDB(t, dir, labels.MustNewMatcher(labels.MatchEqual, "job", "test-api"))
	blockRange := DefaultBlockRange.Milliseconds()
	for i, m := range metas {
		if i > 0 && m.MinTime < metas[i-1].MaxTime {
			t.Errorf("block %s [%d, %d) overlaps the one before, ending at %d", m.ULID, m.MinTime, m.MaxTime, metas[i-1].MaxTime)
		}
		if floorTo(m.MinTime, blockRange) != floorTo(m.MaxTime-1, blockRange) {
			t.Errorf("block %s [%d, %d) crosses a 2h boundary", m.ULID, m.MinTime, m.MaxTime)
		}
	}
	if first, last := metas[0].MinTime, metas[len(metas)-1].MaxTime; first != start.Truncate(2*time.Hour).Add(-4*time.Hour).UnixMilli() || last != later.UnixMilli() {
		t.Errorf("blocks cover [%s, %s)", time.UnixMilli(first).UTC(), time.UnixMilli(last).UTC())
	}
	span := later.Sub(start.Truncate(2 * time.Hour).Add(-4 * time.Hour))
	for name, s := range series {
		if want := int(span / DefaultInterval); len(s.vals) != want {
			t.Errorf("%s: %d samples, want one every 15s: %d", name, len(s.vals), want)
		}
	}
}
