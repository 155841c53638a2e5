package downsampled_test

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/blocktest"
	"github.com/blockflow/blockflow/queryd/downsampled"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/workers/downsample"
)

const hour = int64(3_600_000)

// fiveMinuteBlock writes a raw block of two counters, one hour of 15s samples from mint
// (sample j of series i is i·240+j), and returns its 5m version, opened for queries.
func fiveMinuteBlock(t *testing.T, mint int64) *tsdb.Block {
	t.Helper()
	spec := blocktest.Spec{Series: 2, Samples: 240, MinTime: mint, Metric: "c_total"}
	dir := blocktest.Write(t, t.TempDir(), spec)
	meta, err := block.ReadMetaFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := schemas.DownsampleOutputULID(meta.ULID, schemas.Res5m)
	out := filepath.Join(t.TempDir(), id.String())
	if _, err := downsample.Block(context.Background(), zerolog.Nop(), dir, meta, out, id, schemas.Res5m); err != nil {
		t.Fatal(err)
	}
	b, err := tsdb.OpenBlock(nil, out, aggrchunk.NewPool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

type point struct {
	t int64
	v float64
}

func selectAll(t *testing.T, q storage.Queryable, fn string) map[string][]point {
	t.Helper()
	qr, err := q.Querier(0, 2*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	var hints *storage.SelectHints
	if fn != "-" {
		hints = &storage.SelectHints{Start: 0, End: 2 * hour, Func: fn}
	}
	ss := qr.Select(context.Background(), false, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "c_total"))
	out := map[string][]point{}
	for ss.Next() {
		s := ss.At()
		it := s.Iterator(nil)
		for it.Next() == chunkenc.ValFloat {
			ts, v := it.At()
			out[s.Labels().String()] = append(out[s.Labels().String()], point{ts, v})
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestQueryable reads one series from two consecutive 5m blocks, handed over in the wrong
// order, through the aggregate each function asks for.
func TestQueryable(t *testing.T) {
	first, second := fiveMinuteBlock(t, 0), fiveMinuteBlock(t, hour)
	q := downsampled.NewQueryable(func(int64, int64) []tsdb.BlockReader { return []tsdb.BlockReader{second, first} })

	// Window k (of 12 an hour) of series i holds samples i·240+20k .. i·240+20k+19, stamped
	// at the window's last millisecond; the last one at the block's last sample.
	series := func(i int, value func(lo float64) float64) []point {
		var ps []point
		for b := range int64(2) {
			for k := range int64(12) {
				ps = append(ps, point{b*hour + min((k+1)*300_000-1, 239*15_000), value(float64(240*i) + float64(20*k))})
			}
		}
		return ps
	}
	name := func(i string) string { return `{__name__="c_total", i="00000` + i + `", job="test"}` }
	for _, tc := range []struct {
		fn   string
		want map[string][]point
	}{
		{"max_over_time", map[string][]point{
			name("0"): series(0, func(lo float64) float64 { return lo + 19 }),
			name("1"): series(1, func(lo float64) float64 { return lo + 19 }),
		}},
		{"count_over_time", map[string][]point{
			name("0"): series(0, func(float64) float64 { return 20 }),
			name("1"): series(1, func(float64) float64 { return 20 }),
		}},
		// No function: the window means.
		{"-", map[string][]point{
			name("0"): series(0, func(lo float64) float64 { return lo + 9.5 }),
			name("1"): series(1, func(lo float64) float64 { return lo + 9.5 }),
		}},
	} {
		if got := selectAll(t, q, tc.fn); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s:\ngot  %v\nwant %v", tc.fn, got, tc.want)
		}
	}

	// The counter runs across both blocks: the second block starts over at i·240, below the
	// first one's last raw value, so that is a reset and i·240 counts in full.
	for i, ps := range []string{name("0"), name("1")} {
		got := selectAll(t, q, "rate")[ps]
		base := float64(240 * i)
		if first := got[0]; first != (point{first.t, base}) || first.t >= 15_000 {
			t.Errorf("series %d starts at %v, want the first raw sample %v", i, first, base)
		}
		if end := got[len(got)-1]; end.v != base+239+base+239 {
			t.Errorf("series %d: counter ends at %v, want %v", i, end.v, base+239+base+239)
		}
		if mid := got[13]; mid.t != hour || mid.v != base+239+base {
			t.Errorf("series %d: second block starts at %+v, want %v at %d", i, mid, base+239+base, hour)
		}
	}

	qr, err := q.Querier(0, 2*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	names, _, err := qr.LabelNames(context.Background(), nil)
	if err != nil || !reflect.DeepEqual(names, []string{"__name__", "i", "job"}) {
		t.Errorf("label names %v, %v", names, err)
	}
	values, _, err := qr.LabelValues(context.Background(), "i", nil)
	if err != nil || !reflect.DeepEqual(values, []string{"000000", "000001"}) {
		t.Errorf("label values %v, %v", values, err)
	}
}
