// Package storeapi speaks the Thanos StoreAPI (thanos.Store and thanos.info.Info over gRPC):
// a server over any Source of chunk series, shared by the sidecar and queryd, and a client
// that fans a query out to StoreAPI endpoints and serves it as a Prometheus storage.Querier,
// with replica deduplication and partial responses as the Thanos Querier.
package storeapi

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/blockflow/blockflow/internal/aggrchunk"
	"github.com/blockflow/blockflow/schemas/thanos/store/labelpb"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// LabelsToProto converts a label set to its wire form (sorted by name, as labels.Labels is).
func LabelsToProto(ls labels.Labels) []*labelpb.Label {
	out := make([]*labelpb.Label, 0, ls.Len())
	ls.Range(func(l labels.Label) {
		out = append(out, &labelpb.Label{Name: l.Name, Value: l.Value})
	})
	return out
}

// LabelsFromProto converts wire labels to a label set, sorting them in case a peer did not.
func LabelsFromProto(ls []*labelpb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.GetName(), l.GetValue())
	}
	b.Sort()
	return b.Labels()
}

var matchTypeToProto = map[labels.MatchType]storepb.LabelMatcher_Type{
	labels.MatchEqual:     storepb.LabelMatcher_EQ,
	labels.MatchNotEqual:  storepb.LabelMatcher_NEQ,
	labels.MatchRegexp:    storepb.LabelMatcher_RE,
	labels.MatchNotRegexp: storepb.LabelMatcher_NRE,
}

var matchTypeFromProto = map[storepb.LabelMatcher_Type]labels.MatchType{
	storepb.LabelMatcher_EQ:  labels.MatchEqual,
	storepb.LabelMatcher_NEQ: labels.MatchNotEqual,
	storepb.LabelMatcher_RE:  labels.MatchRegexp,
	storepb.LabelMatcher_NRE: labels.MatchNotRegexp,
}

// MatchersToProto converts Prometheus matchers to their wire form.
func MatchersToProto(ms []*labels.Matcher) ([]*storepb.LabelMatcher, error) {
	out := make([]*storepb.LabelMatcher, 0, len(ms))
	for _, m := range ms {
		t, ok := matchTypeToProto[m.Type]
		if !ok {
			return nil, fmt.Errorf("matcher %s: unknown match type %d", m, m.Type)
		}
		out = append(out, &storepb.LabelMatcher{Type: t, Name: m.Name, Value: m.Value})
	}
	return out, nil
}

// MatchersFromProto converts wire matchers to Prometheus matchers; regular expressions are
// anchored, as in PromQL.
func MatchersFromProto(ms []*storepb.LabelMatcher) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(ms))
	for _, m := range ms {
		t, ok := matchTypeFromProto[m.GetType()]
		if !ok {
			return nil, fmt.Errorf("matcher on %q: unknown type %d", m.GetName(), m.GetType())
		}
		pm, err := labels.NewMatcher(t, m.GetName(), m.GetValue())
		if err != nil {
			return nil, fmt.Errorf("matcher on %q: %w", m.GetName(), err)
		}
		out = append(out, pm)
	}
	return out, nil
}

// ChunkToProto converts a TSDB chunk to its wire form, as the Thanos store gateway does,
// with the time range from the chunk's meta and, for each wire chunk, the xxhash64 of its
// data that queriers use to drop duplicates. A raw chunk goes in AggrChunk.raw. A
// downsampled (0xFF) chunk gives the aggregates named in aggrs (RAW names none), each in
// its field (count, sum, min, max, counter), or [COUNT, SUM], the averages, when aggrs
// names none; an aggregate the chunk does not hold is an error.
func ChunkToProto(m chunks.Meta, aggrs []storepb.Aggr) (*storepb.AggrChunk, error) {
	out := &storepb.AggrChunk{MinTime: m.MinTime, MaxTime: m.MaxTime}
	if m.Chunk.Encoding() != aggrchunk.Encoding {
		raw, err := wireChunk(m.Chunk)
		if err != nil {
			return nil, err
		}
		out.Raw = raw
		return out, nil
	}
	ac := aggrchunk.FromData(m.Chunk.Bytes())
	named := false
	for _, a := range aggrs {
		agg, ok := aggrFromProto(a)
		if !ok {
			continue
		}
		named = true
		if err := setAggregate(out, ac, agg); err != nil {
			return nil, err
		}
	}
	if !named {
		for _, agg := range []aggrchunk.Aggr{aggrchunk.Count, aggrchunk.Sum} {
			if err := setAggregate(out, ac, agg); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// setAggregate puts aggregate a of the downsampled chunk ac into its field of out.
func setAggregate(out *storepb.AggrChunk, ac *aggrchunk.Chunk, a aggrchunk.Aggr) error {
	sub, err := ac.Get(a)
	if err != nil {
		return fmt.Errorf("downsampled chunk [%d,%d]: %w", out.GetMinTime(), out.GetMaxTime(), err)
	}
	c, err := wireChunk(sub)
	if err != nil {
		return fmt.Errorf("downsampled chunk [%d,%d], %s aggregate: %w", out.GetMinTime(), out.GetMaxTime(), a, err)
	}
	*aggrField(out, a) = c
	return nil
}

// wireChunk converts a chunk of a Prometheus encoding.
func wireChunk(c chunkenc.Chunk) (*storepb.Chunk, error) {
	var enc storepb.Chunk_Encoding
	switch e := c.Encoding(); e {
	case chunkenc.EncXOR:
		enc = storepb.Chunk_XOR
	case chunkenc.EncHistogram:
		enc = storepb.Chunk_HISTOGRAM
	case chunkenc.EncFloatHistogram:
		enc = storepb.Chunk_FLOAT_HISTOGRAM
	default:
		return nil, fmt.Errorf("chunk encoding %s not supported", e)
	}
	data := c.Bytes()
	return &storepb.Chunk{Type: enc, Data: data, Hash: xxhash.Sum64(data)}, nil
}

// tsdbChunk decodes a wire chunk.
func tsdbChunk(c *storepb.Chunk) (chunkenc.Chunk, error) {
	var enc chunkenc.Encoding
	switch c.GetType() {
	case storepb.Chunk_XOR:
		enc = chunkenc.EncXOR
	case storepb.Chunk_HISTOGRAM:
		enc = chunkenc.EncHistogram
	case storepb.Chunk_FLOAT_HISTOGRAM:
		enc = chunkenc.EncFloatHistogram
	default:
		return nil, fmt.Errorf("chunk encoding %d not supported", c.GetType())
	}
	return chunkenc.FromData(enc, c.GetData())
}

// ChunkFromProto decodes a wire chunk into a TSDB chunk: the raw chunk when there is one,
// else a downsampled (0xFF) chunk holding the aggregates the response carries, which
// aggrchunk.SeriesIterator reads.
func ChunkFromProto(c *storepb.AggrChunk) (chunks.Meta, error) {
	if raw := c.GetRaw(); raw != nil {
		chk, err := tsdbChunk(raw)
		if err != nil {
			return chunks.Meta{}, fmt.Errorf("decode chunk [%d,%d]: %w", c.GetMinTime(), c.GetMaxTime(), err)
		}
		return chunks.Meta{Chunk: chk, MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime()}, nil
	}
	var subs [aggrchunk.NumAggrs]chunkenc.Chunk
	present := false
	for a := range aggrchunk.Aggr(aggrchunk.NumAggrs) {
		wc := *aggrField(c, a)
		if wc == nil {
			continue
		}
		chk, err := tsdbChunk(wc)
		if err != nil {
			return chunks.Meta{}, fmt.Errorf("decode chunk [%d,%d], %s aggregate: %w", c.GetMinTime(), c.GetMaxTime(), a, err)
		}
		subs[a], present = chk, true
	}
	if !present {
		return chunks.Meta{}, fmt.Errorf("chunk [%d,%d] has neither raw data nor aggregates", c.GetMinTime(), c.GetMaxTime())
	}
	return chunks.Meta{Chunk: aggrchunk.Encode(subs), MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime()}, nil
}

// aggrField is the field of c that carries aggregate a.
func aggrField(c *storepb.AggrChunk, a aggrchunk.Aggr) **storepb.Chunk {
	switch a {
	case aggrchunk.Count:
		return &c.Count
	case aggrchunk.Sum:
		return &c.Sum
	case aggrchunk.Min:
		return &c.Min
	case aggrchunk.Max:
		return &c.Max
	}
	return &c.Counter
}

// wireAggrs are the wire names of the aggregates of a downsampled chunk.
var wireAggrs = [aggrchunk.NumAggrs]storepb.Aggr{
	aggrchunk.Count:   storepb.Aggr_COUNT,
	aggrchunk.Sum:     storepb.Aggr_SUM,
	aggrchunk.Min:     storepb.Aggr_MIN,
	aggrchunk.Max:     storepb.Aggr_MAX,
	aggrchunk.Counter: storepb.Aggr_COUNTER,
}

// aggrFromProto maps a wire aggregate to the aggregate of a downsampled chunk; RAW is none.
func aggrFromProto(w storepb.Aggr) (aggrchunk.Aggr, bool) {
	for a, name := range wireAggrs {
		if name == w {
			return aggrchunk.Aggr(a), true
		}
	}
	return 0, false
}

// aggrsToProto maps the aggregates of a downsampled chunk to their wire names.
func aggrsToProto(aggrs []aggrchunk.Aggr) []storepb.Aggr {
	out := make([]storepb.Aggr, 0, len(aggrs))
	for _, a := range aggrs {
		out = append(out, wireAggrs[a])
	}
	return out
}
