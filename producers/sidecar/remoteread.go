package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/blockflow/blockflow/internal/storeapi"
)

// maxFrameSize bounds one frame of a streamed remote-read response, as Prometheus's own
// reader does (its frames are about 1 MiB).
const maxFrameSize = 50 << 20

// promQuerier reads a Prometheus server as a storage.ChunkQuerier: series with their chunks
// through the remote-read API, streamed as XOR chunks (so samples are never re-encoded);
// series without chunks, label names and values through the HTTP API, as the Thanos
// sidecar does. Prometheus adds its external labels to remote-read series; the caller sets
// the sidecar's on top (storeapi.WithExternalLabels), so they are never doubled.
type promQuerier struct {
	client     *http.Client
	base       string // Prometheus URL without a trailing slash
	mint, maxt int64
}

func (q *promQuerier) Close() error { return nil }

func (q *promQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.ChunkSeriesSet {
	mint, maxt := q.mint, q.maxt
	if hints != nil {
		mint, maxt = hints.Start, hints.End
	}
	var series []storage.ChunkSeries
	var err error
	if hints != nil && hints.Func == "series" {
		series, err = q.seriesOnly(ctx, mint, maxt, ms)
	} else {
		series, err = q.remoteRead(ctx, mint, maxt, ms)
	}
	if err != nil {
		return storage.ErrChunkSeriesSet(err)
	}
	// Sorted whatever was asked: Prometheus sorts by its own labels, and the HTTP API
	// does not promise an order. No limit is applied: adding the external labels can
	// change the order, so the StoreAPI server cuts after that.
	slices.SortFunc(series, func(a, b storage.ChunkSeries) int { return labels.Compare(a.Labels(), b.Labels()) })
	return storeapi.NewChunkSeriesList(series, nil)
}

// remoteRead runs one remote-read query and collects its series.
func (q *promQuerier) remoteRead(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]storage.ChunkSeries, error) {
	pms, err := toPromMatchers(ms)
	if err != nil {
		return nil, err
	}
	req := &prompb.ReadRequest{
		Queries:               []*prompb.Query{{StartTimestampMs: mint, EndTimestampMs: maxt, Matchers: pms}},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS},
	}
	data, err := req.Marshal()
	if err != nil {
		return nil, fmt.Errorf("remote read: encode request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, q.base+"/api/v1/read", bytes.NewReader(snappy.Encode(nil, data)))
	if err != nil {
		return nil, fmt.Errorf("remote read: %w", err)
	}
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err := q.client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("remote read: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("remote read: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	if mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/x-streamed-protobuf" || params["proto"] != "prometheus.ChunkedReadResponse" {
		return nil, fmt.Errorf("remote read: response of type %q, want streamed XOR chunks (Prometheus 2.13 or later)", resp.Header.Get("Content-Type"))
	}

	var out []storage.ChunkSeries
	var last *chunkSeries
	frames := &frameReader{r: bufio.NewReader(resp.Body)}
	for {
		frame, err := frames.next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("remote read: %w", err)
		}
		var msg prompb.ChunkedReadResponse
		if err := msg.Unmarshal(frame); err != nil {
			return nil, fmt.Errorf("remote read: decode frame: %w", err)
		}
		for _, cs := range msg.ChunkedSeries {
			lset := labelsFromProm(cs.Labels)
			metas, err := chunkMetas(cs.Chunks)
			if err != nil {
				return nil, fmt.Errorf("remote read: series %s: %w", lset, err)
			}
			// A series larger than a frame comes in consecutive frames.
			if last != nil && labels.Equal(last.lset, lset) {
				last.chunks = append(last.chunks, metas...)
				continue
			}
			last = &chunkSeries{lset: lset, chunks: metas}
			out = append(out, last)
		}
	}
}

// seriesOnly lists the series without their chunks through /api/v1/series.
func (q *promQuerier) seriesOnly(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]storage.ChunkSeries, error) {
	params := q.apiParams(mint, maxt, ms, 0)
	var sets []map[string]string
	if err := q.getAPI(ctx, "series", params, &sets); err != nil {
		return nil, err
	}
	out := make([]storage.ChunkSeries, 0, len(sets))
	for _, m := range sets {
		out = append(out, &chunkSeries{lset: labels.FromMap(m)})
	}
	return out, nil
}

func (q *promQuerier) LabelNames(ctx context.Context, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var names []string
	if err := q.getAPI(ctx, "labels", q.apiParams(q.mint, q.maxt, ms, labelLimit(hints)), &names); err != nil {
		return nil, nil, err
	}
	return names, nil, nil
}

func (q *promQuerier) LabelValues(ctx context.Context, name string, hints *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	var values []string
	if err := q.getAPI(ctx, "label/"+url.PathEscape(name)+"/values", q.apiParams(q.mint, q.maxt, ms, labelLimit(hints)), &values); err != nil {
		return nil, nil, err
	}
	return values, nil, nil
}

func labelLimit(h *storage.LabelHints) int {
	if h == nil {
		return 0
	}
	return h.Limit
}

// apiParams are the start, end, match[] and limit parameters of the HTTP API. Times outside
// what the API can parse are left out, which means "all time" there too.
func (q *promQuerier) apiParams(mint, maxt int64, ms []*labels.Matcher, limit int) url.Values {
	const bound = int64(1) << 52 // ms; ~140,000 years either way
	p := url.Values{}
	if mint > -bound {
		p.Set("start", formatMillis(mint))
	}
	if maxt < bound {
		p.Set("end", formatMillis(maxt))
	}
	if sel := selector(ms); sel != "" {
		p.Set("match[]", sel)
	}
	if limit > 0 {
		p.Set("limit", strconv.Itoa(limit))
	}
	return p
}

func formatMillis(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}

// selector renders matchers as a PromQL series selector, or "" for none. The HTTP API
// refuses a selector all of whose matchers match the empty string, so such a selector gets
// __name__=~".+" (every series with a name).
func selector(ms []*labels.Matcher) string {
	var parts []string
	nonEmpty := false
	for _, m := range ms {
		if m.Name == "" {
			continue // storeapi's "every series" matcher
		}
		parts = append(parts, m.String())
		nonEmpty = nonEmpty || !m.Matches("")
	}
	if len(parts) == 0 {
		return ""
	}
	if !nonEmpty {
		parts = append(parts, `__name__=~".+"`)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// getAPI GETs /api/v1/<path> and decodes the data of a successful answer into data.
func (q *promQuerier) getAPI(ctx context.Context, path string, params url.Values, data any) error {
	u := q.base + "/api/v1/" + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("prometheus /api/v1/%s: %w", path, err)
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return fmt.Errorf("prometheus /api/v1/%s: %w", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("prometheus /api/v1/%s: %s: decode: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("prometheus /api/v1/%s: %s: %s", path, resp.Status, body.Error)
	}
	if err := json.Unmarshal(body.Data, data); err != nil {
		return fmt.Errorf("prometheus /api/v1/%s: decode data: %w", path, err)
	}
	return nil
}

var promMatchTypes = map[labels.MatchType]prompb.LabelMatcher_Type{
	labels.MatchEqual:     prompb.LabelMatcher_EQ,
	labels.MatchNotEqual:  prompb.LabelMatcher_NEQ,
	labels.MatchRegexp:    prompb.LabelMatcher_RE,
	labels.MatchNotRegexp: prompb.LabelMatcher_NRE,
}

func toPromMatchers(ms []*labels.Matcher) ([]*prompb.LabelMatcher, error) {
	out := make([]*prompb.LabelMatcher, 0, len(ms))
	for _, m := range ms {
		t, ok := promMatchTypes[m.Type]
		if !ok {
			return nil, fmt.Errorf("matcher %s: unknown match type", m)
		}
		out = append(out, &prompb.LabelMatcher{Type: t, Name: m.Name, Value: m.Value})
	}
	return out, nil
}

func labelsFromProm(ls []prompb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}

// chunkMetas decodes remote-read chunks; prompb's encodings are TSDB's.
func chunkMetas(chks []prompb.Chunk) ([]chunks.Meta, error) {
	out := make([]chunks.Meta, 0, len(chks))
	for _, c := range chks {
		enc := chunkenc.Encoding(c.Type)
		if !chunkenc.IsValidEncoding(enc) {
			return nil, fmt.Errorf("chunk [%d, %d]: unknown encoding %s", c.MinTimeMs, c.MaxTimeMs, c.Type)
		}
		chk, err := chunkenc.FromData(enc, c.Data)
		if err != nil {
			return nil, fmt.Errorf("chunk [%d, %d]: %w", c.MinTimeMs, c.MaxTimeMs, err)
		}
		out = append(out, chunks.Meta{MinTime: c.MinTimeMs, MaxTime: c.MaxTimeMs, Chunk: chk})
	}
	return out, nil
}

// frameReader reads the frames of a streamed remote-read response: a uvarint length, the
// big-endian CRC-32 (Castagnoli) of the data, then the data.
type frameReader struct {
	r *bufio.Reader
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// next returns the next frame, in a buffer of its own, or io.EOF after the last one.
func (f *frameReader) next() ([]byte, error) {
	size, err := binary.ReadUvarint(f.r)
	if err != nil {
		return nil, err // io.EOF between frames is the end
	}
	if size > maxFrameSize {
		return nil, fmt.Errorf("frame of %d bytes, more than %d", size, maxFrameSize)
	}
	var sum [4]byte
	if _, err := io.ReadFull(f.r, sum[:]); err != nil {
		return nil, fmt.Errorf("frame checksum: %w", noEOF(err))
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f.r, data); err != nil {
		return nil, fmt.Errorf("frame data: %w", noEOF(err))
	}
	if crc32.Checksum(data, castagnoli) != binary.BigEndian.Uint32(sum[:]) {
		return nil, errors.New("corrupt frame: checksum mismatch")
	}
	return data, nil
}

// noEOF turns an end of stream inside a frame into the error it is.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunkSeries is a series and its chunks, sorted by time.
type chunkSeries struct {
	lset   labels.Labels
	chunks []chunks.Meta
}

func (s *chunkSeries) Labels() labels.Labels { return s.lset }

func (s *chunkSeries) Iterator(chunks.Iterator) chunks.Iterator {
	return storage.NewListChunkSeriesIterator(s.chunks...)
}
