package compact

import (
	"cmp"
	"slices"

	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/dedup"
	"github.com/blockflow/blockflow/schemas"
)

// mergeFunc is how the compactor merges one series found in several input blocks.
func mergeFunc(deduplication string) storage.VerticalChunkSeriesMergeFunc {
	if deduplication == schemas.DedupPenalty {
		return penaltyMerge
	}
	// Prometheus' vertical compaction: samples of equal timestamps once, others interleaved.
	return storage.NewCompactingChunkSeriesMerger(storage.ChainedSeriesMerge)
}

// penaltyMerge merges the copies of one series from the blocks of HA replicas, as the
// Thanos compactor does with --deduplication.func=penalty: the chunks are split into runs
// that do not overlap in time (one run per replica, as far as the data tells), and the runs
// are merged sample by sample with the penalty algorithm the querier uses, so the output
// holds what a deduplicating query over the inputs reads. The merged samples are encoded
// again in chunks of at most 120 samples. A series whose chunks do not overlap (blocks
// of one replica, or one replica only) keeps its chunks as they are.
func penaltyMerge(series ...storage.ChunkSeries) storage.ChunkSeries {
	if len(series) == 1 {
		return series[0]
	}
	lset := series[0].Labels()
	return &storage.ChunkSeriesEntry{
		Lset: lset,
		ChunkIteratorFn: func(chunks.Iterator) chunks.Iterator {
			var all []chunks.Meta
			for _, s := range series {
				chks, err := storage.ExpandChunks(s.Iterator(nil))
				if err != nil {
					return errChunks{err}
				}
				all = append(all, chks...)
			}
			slices.SortStableFunc(all, func(a, b chunks.Meta) int {
				if c := cmp.Compare(a.MinTime, b.MinTime); c != 0 {
					return c
				}
				return cmp.Compare(a.MaxTime, b.MaxTime)
			})
			runs := dedup.SplitOverlapping(all)
			if len(runs) == 1 {
				return storage.NewListChunkSeriesIterator(all...)
			}
			replicas := make([]chunkenc.Iterator, 0, len(runs))
			for _, run := range runs {
				iterables := make([]chunkenc.Iterable, 0, len(run))
				for _, c := range run {
					iterables = append(iterables, c.Chunk)
				}
				replicas = append(replicas, storage.ChainSampleIteratorFromIterables(nil, iterables))
			}
			merged := &storage.SeriesEntry{
				Lset:             lset,
				SampleIteratorFn: func(chunkenc.Iterator) chunkenc.Iterator { return dedup.NewIterator(replicas...) },
			}
			return storage.NewSeriesToChunkEncoder(merged).Iterator(nil)
		},
	}
}

// errChunks is a chunk iterator that failed before its first chunk.
type errChunks struct{ err error }

func (errChunks) At() chunks.Meta { return chunks.Meta{} }
func (errChunks) Next() bool      { return false }
func (e errChunks) Err() error    { return e.err }
