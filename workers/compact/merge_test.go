package compact

import (
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

type fsample struct {
	t int64
	f float64
}

// replica returns a chunk series with a sample every 15s in [mint, maxt) outside gap,
// encoded as the head does (chunks of 120 samples); value is t/1000 + offset.
func replica(mint, maxt int64, gap [2]int64, offset float64) (storage.ChunkSeries, []fsample) {
	var samples []chunks.Sample
	var plain []fsample
	for t := mint; t < maxt; t += 15_000 {
		if t >= gap[0] && t < gap[1] {
			continue
		}
		v := float64(t/1000) + offset
		samples = append(samples, listSample{t, v})
		plain = append(plain, fsample{t, v})
	}
	s := storage.NewListSeries(labels.FromStrings("__name__", "m"), samples)
	return storage.NewSeriesToChunkEncoder(s), plain
}

type listSample struct {
	t int64
	f float64
}

func (s listSample) T() int64                      { return s.t }
func (s listSample) ST() int64                     { return 0 }
func (s listSample) F() float64                    { return s.f }
func (s listSample) H() *histogram.Histogram       { return nil }
func (s listSample) FH() *histogram.FloatHistogram { return nil }
func (s listSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s listSample) Copy() chunks.Sample           { return s }

func samplesOf(t *testing.T, it chunkenc.Iterator) []fsample {
	t.Helper()
	var out []fsample
	for it.Next() != chunkenc.ValNone {
		ts, v := it.At()
		out = append(out, fsample{ts, v})
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPenaltyMergeReplicas(t *testing.T) {
	const h = 3_600_000
	a, aSamples := replica(0, 4*h, [2]int64{h, h + 600_000}, 0)
	b, bSamples := replica(0, 4*h, [2]int64{3 * h, 3*h + 300_000}, 0.5)

	merged := penaltyMerge(a, b)
	chks, err := storage.ExpandChunks(merged.Iterator(nil))
	if err != nil {
		t.Fatal(err)
	}
	var got []fsample
	for i, c := range chks {
		if n := c.Chunk.NumSamples(); n > 120 {
			t.Errorf("chunk %d holds %d samples, over 120", i, n)
		}
		if i > 0 && c.MinTime <= chks[i-1].MaxTime {
			t.Errorf("chunk %d [%d, %d] overlaps the one before [%d, %d]", i, c.MinTime, c.MaxTime, chks[i-1].MinTime, chks[i-1].MaxTime)
		}
		got = append(got, samplesOf(t, c.Chunk.Iterator(nil))...)
	}
	// The merged stream is one sample per timestamp, each taken from a replica, and
	// each replica's gap is filled from the other. Where it switches replicas, the penalty
	// algorithm skips up to two samples (it waits out twice the interval before trusting
	// the other replica); there are two switches into and two out of gaps here.
	byTime := map[int64][]float64{}
	for _, s := range append(aSamples, bSamples...) {
		byTime[s.t] = append(byTime[s.t], s.f)
	}
	for i, s := range got {
		if i > 0 && s.t <= got[i-1].t {
			t.Fatalf("sample %d at %d is not after %d", i, s.t, got[i-1].t)
		}
		if !slices.Contains(byTime[s.t], s.f) {
			t.Fatalf("sample %v is in neither replica (%v)", s, byTime[s.t])
		}
	}
	if missing := len(byTime) - len(got); missing < 0 || missing > 4*2 {
		t.Errorf("merged %d samples of %d timestamps: %d missing", len(got), len(byTime), missing)
	}
}

func TestPenaltyMergeKeepsChunksThatDoNotOverlap(t *testing.T) {
	const h = 3_600_000
	first, _ := replica(0, 2*h, [2]int64{}, 0)
	second, _ := replica(2*h, 4*h, [2]int64{}, 0)
	want, err := storage.ExpandChunks(first.Iterator(nil))
	if err != nil {
		t.Fatal(err)
	}
	more, err := storage.ExpandChunks(second.Iterator(nil))
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, more...)

	got, err := storage.ExpandChunks(penaltyMerge(second, first).Iterator(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d chunks, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].MinTime != want[i].MinTime || string(got[i].Chunk.Bytes()) != string(want[i].Chunk.Bytes()) {
			t.Errorf("chunk %d re-encoded or reordered", i)
		}
	}
}
