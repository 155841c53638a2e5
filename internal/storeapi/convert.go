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

// chunkEncAggr is the chunk encoding of Thanos downsampled chunks (five aggregates in one).
const chunkEncAggr = chunkenc.Encoding(0xff)

// ChunkToProto converts a raw TSDB chunk to its wire form: the chunk in AggrChunk.raw, the
// time range from the chunk's meta, and the xxhash64 of the data queriers use to drop
// duplicates.
func ChunkToProto(m chunks.Meta) (*storepb.AggrChunk, error) {
	var enc storepb.Chunk_Encoding
	switch e := m.Chunk.Encoding(); e {
	case chunkenc.EncXOR:
		enc = storepb.Chunk_XOR
	case chunkenc.EncHistogram:
		enc = storepb.Chunk_HISTOGRAM
	case chunkenc.EncFloatHistogram:
		enc = storepb.Chunk_FLOAT_HISTOGRAM
	case chunkEncAggr:
		// Downsampled blocks: the requested aggregates go in count/sum/min/max/counter.
		return nil, fmt.Errorf("downsampled chunks are not served yet")
	default:
		return nil, fmt.Errorf("chunk encoding %s not supported", e)
	}
	data := m.Chunk.Bytes()
	return &storepb.AggrChunk{
		MinTime: m.MinTime,
		MaxTime: m.MaxTime,
		Raw:     &storepb.Chunk{Type: enc, Data: data, Hash: xxhash.Sum64(data)},
	}, nil
}

// ChunkFromProto decodes a raw wire chunk into a TSDB chunk.
func ChunkFromProto(c *storepb.AggrChunk) (chunks.Meta, error) {
	raw := c.GetRaw()
	if raw == nil {
		return chunks.Meta{}, fmt.Errorf("chunk [%d,%d] has no raw data (downsampled chunks are not read yet)", c.GetMinTime(), c.GetMaxTime())
	}
	var enc chunkenc.Encoding
	switch raw.GetType() {
	case storepb.Chunk_XOR:
		enc = chunkenc.EncXOR
	case storepb.Chunk_HISTOGRAM:
		enc = chunkenc.EncHistogram
	case storepb.Chunk_FLOAT_HISTOGRAM:
		enc = chunkenc.EncFloatHistogram
	default:
		return chunks.Meta{}, fmt.Errorf("chunk encoding %d not supported", raw.GetType())
	}
	chk, err := chunkenc.FromData(enc, raw.GetData())
	if err != nil {
		return chunks.Meta{}, fmt.Errorf("decode chunk [%d,%d]: %w", c.GetMinTime(), c.GetMaxTime(), err)
	}
	return chunks.Meta{Chunk: chk, MinTime: c.GetMinTime(), MaxTime: c.GetMaxTime()}, nil
}
