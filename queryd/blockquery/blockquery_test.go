package blockquery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/queryd/bucketblock"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
)

const hour = int64(3600_000)

type env struct {
	bkt    *blocktest.CountingBucket
	blocks []*bucketblock.Block
	recs   map[string]schemas.BlockRecord // by name
	q      *Queryable[*bucketblock.Block]
}

// newEnv uploads:
//   - a0, a1: cluster a, adjacent [0,2h) and [2h,4h), the same 4 counter series;
//   - b0: cluster b, [0,2h), 4 counter series;
//   - c0: cluster c, [0,2h), series that carry their own cluster label and series whose
//     order changes once the external labels are added.
func newEnv(t *testing.T) *env {
	t.Helper()
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{bkt: blocktest.NewCountingBucket(fs), recs: map[string]schemas.BlockRecord{}}
	cache, err := bucketblock.NewCache(e.bkt, bucketblock.CacheOptions{Dir: t.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })

	own := []storage.Series{
		list(labels.FromStrings("__name__", "own", "cluster", "inner", "x", "1"), 0, 2*hour),
		list(labels.FromStrings("__name__", "order", "x", "1"), 0, 2*hour),
		list(labels.FromStrings("__name__", "order", "x", "1", "y", "1"), 0, 2*hour),
	}
	for _, b := range []struct {
		name       string
		ext        map[string]string
		series     []storage.Series
		mint, maxt int64
	}{
		{"a0", map[string]string{"cluster": "a", "z": "1"}, blocktest.FloatSeries("counter", 4, 0, 2*hour, 30_000), 0, 2 * hour},
		{"a1", map[string]string{"cluster": "a", "z": "1"}, blocktest.FloatSeries("counter", 4, 2*hour, 4*hour, 30_000), 2 * hour, 4 * hour},
		{"b0", map[string]string{"cluster": "b", "z": "1"}, blocktest.FloatSeries("counter", 4, 0, 2*hour, 30_000), 0, 2 * hour},
		{"c0", map[string]string{"cluster": "c", "z": "1"}, own, 0, 2 * hour},
	} {
		rec := blocktest.Upload(t, e.bkt, blocktest.Create(t, t.TempDir(), b.series), b.ext, nil)
		blk, err := bucketblock.New(rec, cache)
		if err != nil {
			t.Fatal(err)
		}
		e.blocks = append(e.blocks, blk)
		e.recs[b.name] = rec
	}
	e.q = NewQueryable(func(mint, maxt int64) []*bucketblock.Block {
		var out []*bucketblock.Block
		for _, b := range e.blocks {
			if b.Meta().MinTime <= maxt && mint < b.Meta().MaxTime {
				out = append(out, b)
			}
		}
		return out
	})
	return e
}

func list(lset labels.Labels, mint, maxt int64) storage.Series {
	var samples []chunks.Sample
	for ts := mint; ts < maxt; ts += 60_000 {
		samples = append(samples, blocktest.Sample{TS: ts, V: float64(ts)})
	}
	return storage.NewListSeries(lset, samples)
}

// downloaded reports whether the block's index was fetched.
func (e *env) downloaded(name string) bool {
	return e.bkt.Calls("Get", e.recs[name].ULID.String()+"/index") > 0
}

type series struct {
	labels     string
	samples    int
	mint, maxt int64
}

func selectAll(t *testing.T, q storage.Querier, sorted bool, hints *storage.SelectHints, ms ...*labels.Matcher) []series {
	t.Helper()
	set := q.Select(context.Background(), sorted, hints, ms...)
	var out []series
	var it chunkenc.Iterator
	for set.Next() {
		s := series{labels: set.At().Labels().String(), mint: -1}
		it = set.At().Iterator(it)
		for it.Next() != chunkenc.ValNone {
			ts := it.AtT()
			if s.mint < 0 {
				s.mint = ts
			}
			s.maxt = ts
			s.samples++
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
		out = append(out, s)
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func labelsOf(ss []series) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.labels)
	}
	return out
}

func TestSelect(t *testing.T) {
	e := newEnv(t)
	q, err := e.q.Querier(0, 4*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	t.Run("merged across adjacent blocks, external labels attached", func(t *testing.T) {
		got := selectAll(t, q, false, nil, labels.MustNewMatcher(labels.MatchEqual, "cluster", "a"), labels.MustNewMatcher(labels.MatchEqual, "i", "3"))
		want := []series{{labels: `{__name__="counter", cluster="a", i="3", job="job-0", z="1"}`, samples: 480, mint: 0, maxt: 4*hour - 30_000}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	})

	t.Run("external label wins over the series' own", func(t *testing.T) {
		got := labelsOf(selectAll(t, q, false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "own")))
		if want := []string{`{__name__="own", cluster="c", x="1", z="1"}`}; !slices.Equal(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		// The series' own value is gone, as after Thanos' external labels.
		if got := selectAll(t, q, false, nil, labels.MustNewMatcher(labels.MatchEqual, "cluster", "inner")); len(got) != 0 {
			t.Fatalf("matched the hidden value: %v", got)
		}
	})

	t.Run("sorted after external labels change the order", func(t *testing.T) {
		got := labelsOf(selectAll(t, q, true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "order|own")))
		if !slices.IsSortedFunc(got, strings.Compare) || len(got) != 3 {
			t.Fatalf("not sorted: %v", got)
		}
		if got[0] != `{__name__="order", cluster="c", x="1", y="1", z="1"}` {
			t.Fatalf("first series %s", got[0])
		}
	})

	for _, tc := range []struct {
		name     string
		m        *labels.Matcher
		clusters []string
	}{
		{"equal", labels.MustNewMatcher(labels.MatchEqual, "cluster", "b"), []string{"b"}},
		{"not equal", labels.MustNewMatcher(labels.MatchNotEqual, "cluster", "b"), []string{"a"}},
		{"regexp", labels.MustNewMatcher(labels.MatchRegexp, "cluster", "a|b"), []string{"a", "b"}},
		{"not regexp", labels.MustNewMatcher(labels.MatchNotRegexp, "cluster", "a.*"), []string{"b"}},
		{"regexp nothing", labels.MustNewMatcher(labels.MatchRegexp, "cluster", "x.*"), nil},
	} {
		t.Run("external matcher "+tc.name, func(t *testing.T) {
			got := selectAll(t, q, true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "counter"), tc.m)
			var clusters []string
			for _, s := range got {
				c := s.labels[strings.Index(s.labels, `cluster="`)+9:][:1]
				if !slices.Contains(clusters, c) {
					clusters = append(clusters, c)
				}
			}
			if !slices.Equal(clusters, tc.clusters) || len(got) != 4*len(tc.clusters) {
				t.Fatalf("got %d series of clusters %v, want 4 of each of %v", len(got), clusters, tc.clusters)
			}
		})
	}

	t.Run("only external matchers select every series of the block", func(t *testing.T) {
		got := selectAll(t, q, false, nil, labels.MustNewMatcher(labels.MatchEqual, "cluster", "c"))
		if len(got) != 3 {
			t.Fatalf("got %v", got)
		}
	})
}

func TestPruning(t *testing.T) {
	e := newEnv(t)
	q, err := e.q.Querier(0, 4*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()

	selectAll(t, q, false, nil, labels.MustNewMatcher(labels.MatchEqual, "cluster", "b"), labels.MustNewMatcher(labels.MatchEqual, "i", "1"))
	if !e.downloaded("b0") || e.downloaded("a0") || e.downloaded("a1") || e.downloaded("c0") {
		t.Fatal("a block ruled out by an external label was opened")
	}
	hints := &storage.SelectHints{Start: 3 * hour, End: 4 * hour}
	got := selectAll(t, q, false, hints, labels.MustNewMatcher(labels.MatchEqual, "cluster", "a"), labels.MustNewMatcher(labels.MatchEqual, "i", "1"))
	if len(got) != 1 || got[0].mint != 3*hour || got[0].maxt != 4*hour-30_000 {
		t.Fatalf("got %v", got)
	}
	if e.downloaded("a0") || !e.downloaded("a1") {
		t.Fatal("a block outside the hinted range was opened")
	}
	if e.bkt.Calls("Iter", "") != 0 {
		t.Fatal("the bucket was listed")
	}
}

func TestLabels(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	q, err := e.q.Querier(0, 4*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	eq := func(n, v string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchEqual, n, v) }

	for _, tc := range []struct {
		name  string
		label string // "": label names
		ms    []*labels.Matcher
		limit int
		want  []string
	}{
		{"names", "", nil, 0, []string{"__name__", "cluster", "i", "job", "x", "y", "z"}},
		{"names, limited", "", nil, 2, []string{"__name__", "cluster"}},
		{"names of a series", "", []*labels.Matcher{eq("__name__", "own")}, 0, []string{"__name__", "cluster", "x", "z"}},
		{"names, by external label", "", []*labels.Matcher{eq("cluster", "b")}, 0, []string{"__name__", "cluster", "i", "job", "z"}},
		{"names, nothing matches", "", []*labels.Matcher{eq("cluster", "nope")}, 0, nil},
		{"external values", "cluster", nil, 0, []string{"a", "b", "c"}},
		{"external values, by series", "cluster", []*labels.Matcher{eq("__name__", "own")}, 0, []string{"c"}},
		{"external values, by series nowhere", "cluster", []*labels.Matcher{eq("__name__", "nope")}, 0, nil},
		{"external values, by external label", "cluster", []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "cluster", "a|c")}, 0, []string{"a", "c"}},
		{"values", "i", nil, 0, []string{"0", "1", "2", "3"}},
		{"values, limited", "i", nil, 2, []string{"0", "1"}},
		{"values, by external label", "x", []*labels.Matcher{eq("cluster", "c")}, 0, []string{"1"}},
		{"values, pruned by external label", "x", []*labels.Matcher{eq("cluster", "a")}, 0, nil},
		{"values, by series label", "job", []*labels.Matcher{eq("i", "1"), eq("cluster", "b")}, 0, []string{"job-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hints := &storage.LabelHints{Limit: tc.limit}
			var got []string
			var err error
			if tc.label == "" {
				got, _, err = q.LabelNames(ctx, hints, tc.ms...)
			} else {
				got, _, err = q.LabelValues(ctx, tc.label, hints, tc.ms...)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestChunkQuerier(t *testing.T) {
	e := newEnv(t)
	q, err := e.q.ChunkQuerier(0, 4*hour)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "counter"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "a"))
	var got []string
	var it chunks.Iterator
	for set.Next() {
		s := set.At()
		n, samples := 0, 0
		it = s.Iterator(it)
		for it.Next() {
			n++
			samples += it.At().Chunk.NumSamples()
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
		got = append(got, fmt.Sprintf("%s %d samples", s.Labels(), samples))
		if n < 2 {
			t.Errorf("%s: %d chunks, want the chunks of both blocks", s.Labels(), n)
		}
	}
	if err := set.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || !strings.HasSuffix(got[0], " 480 samples") {
		t.Fatalf("got %v", got)
	}
}

// TestWholeChunkQuerier: WholeChunkQuerier hands out the chunks that overlap the range
// as the blocks hold them, reaching outside it, where ChunkQuerier trims them to the range.
func TestWholeChunkQuerier(t *testing.T) {
	e := newEnv(t)
	hints := &storage.SelectHints{Start: hour / 2, End: 3*hour + hour/2}
	for _, tc := range []struct {
		name    string
		open    func(mint, maxt int64) (storage.ChunkQuerier, error)
		trimmed bool
	}{
		{"trimmed", e.q.ChunkQuerier, true},
		{"whole", e.q.WholeChunkQuerier, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := tc.open(0, 4*hour)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			set := q.Select(context.Background(), true, hints, labels.MustNewMatcher(labels.MatchEqual, "__name__", "counter"), labels.MustNewMatcher(labels.MatchEqual, "cluster", "a"))
			n := 0
			for set.Next() {
				n++
				mint, maxt := int64(1<<62), int64(-1)
				it := set.At().Iterator(nil)
				for it.Next() {
					mint, maxt = min(mint, it.At().MinTime), max(maxt, it.At().MaxTime)
				}
				if it.Err() != nil {
					t.Fatal(it.Err())
				}
				if trimmed := mint >= hints.Start && maxt <= hints.End; trimmed != tc.trimmed {
					t.Errorf("%s: chunks over [%d,%d], selected [%d,%d]", set.At().Labels(), mint, maxt, hints.Start, hints.End)
				}
			}
			if err := set.Err(); err != nil || n != 4 {
				t.Fatalf("%d series, %v", n, err)
			}
		})
	}
}
