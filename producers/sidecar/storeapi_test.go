package sidecar

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/storeapi"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// target is a scrape target whose marker gauge the test sets.
type target struct {
	srv    *httptest.Server
	marker atomic.Int64
}

func newTarget(t *testing.T) *target {
	tg := &target{}
	tg.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE marker gauge\nmarker %d\n", tg.marker.Load())
	}))
	t.Cleanup(tg.srv.Close)
	return tg
}

func (tg *target) hostPort() string { return strings.TrimPrefix(tg.srv.URL, "http://") }

func serveSource(t *testing.T, src storeapi.Source) *storeapi.Client {
	t.Helper()
	g := storeapi.NewGRPCServer()
	storeapi.NewServer(src).Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	c, err := storeapi.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// lastMarker returns the labels and the newest value of the marker series over the last
// minute, or an error.
func lastMarker(c *storeapi.Client) (labels.Labels, float64, error) {
	now := time.Now().UnixMilli()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.Store().Series(ctx, &storepb.SeriesRequest{
		MinTime: now - 60_000, MaxTime: now + 60_000,
		Matchers: []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "marker"}},
	})
	if err != nil {
		return labels.EmptyLabels(), 0, err
	}
	var lset labels.Labels
	last := math.NaN()
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return lset, 0, err
		}
		s := resp.GetSeries()
		if s == nil {
			continue
		}
		lset = storeapi.LabelsFromProto(s.GetLabels())
		for _, c := range s.GetChunks() {
			m, err := storeapi.ChunkFromProto(c)
			if err != nil {
				return lset, 0, err
			}
			it := m.Chunk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				_, last = it.At()
			}
		}
	}
	return lset, last, nil
}

// TestPrometheusSourceServesTheHead: samples Prometheus scraped seconds ago come through
// the sidecar's StoreAPI (remote read of the head), with Prometheus's external labels;
// when Prometheus goes away, Info keeps answering and reads fail.
func TestPrometheusSourceServesTheHead(t *testing.T) {
	tg := newTarget(t)
	tg.marker.Store(1)
	ref := promref.Start(t, promref.Options{
		ExternalLabels: map[string]string{"cluster": "eu-1", "replica": "a"},
		ScrapeTargets:  []string{tg.hostPort()},
		ScrapeInterval: time.Second,
	})
	src, err := NewPrometheusSource(SourceOptions{PrometheusURL: ref.URL(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	c := serveSource(t, src)
	if _, err := c.Info(context.Background()); status.Code(err) != codes.Unavailable {
		t.Fatalf("info before Prometheus answered: %v, want Unavailable", err)
	}
	for _, want := range []float64{1, 2} {
		tg.marker.Store(int64(want))
		waitUntil(t, fmt.Sprintf("marker %v through the StoreAPI", want), func() (bool, string) {
			if err := src.Refresh(context.Background()); err != nil {
				return false, err.Error()
			}
			lset, v, err := lastMarker(c)
			if err != nil {
				return false, err.Error()
			}
			wantLabels := labels.FromStrings("__name__", "marker", "cluster", "eu-1", "instance", tg.hostPort(), "job", "targets", "replica", "a")
			return v == want && labels.Equal(lset, wantLabels), fmt.Sprintf("%s = %v", lset, v)
		})
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now().UnixMilli(); info.ComponentType != "sidecar" || info.MinTime > now || info.MinTime < now-5*60_000 || info.MaxTime != math.MaxInt64 ||
		len(info.LabelSets) != 1 || info.LabelSets[0].String() != `{cluster="eu-1", replica="a"}` {
		t.Fatalf("info %+v", info)
	}
	vals, err := c.Store().LabelValues(context.Background(), &storepb.LabelValuesRequest{Label: "job", Start: info.MinTime, End: time.Now().UnixMilli()})
	if err != nil || strings.Join(vals.GetValues(), ",") != "targets" {
		t.Fatalf("job values %v, %v", vals.GetValues(), err)
	}

	ref.Stop()
	if err := src.Refresh(context.Background()); err == nil {
		t.Fatal("refresh with Prometheus stopped: no error")
	}
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatalf("info with Prometheus stopped: %v, want the last known state", err)
	}
	if _, _, err := lastMarker(c); err == nil {
		t.Fatal("series with Prometheus stopped: no error")
	}
}

func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestPrometheusSourceUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	src, err := NewPrometheusSource(SourceOptions{PrometheusURL: "http://" + addr, Labels: testLabels, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Refresh(context.Background()); err == nil {
		t.Fatal("refresh: no error")
	}
	if _, err := src.Info(context.Background()); err == nil {
		t.Fatal("info: no error")
	}
	if _, err := src.ChunkQuerier(0, 1); err == nil {
		t.Fatal("chunk querier: no error")
	}
	if _, err := NewPrometheusSource(SourceOptions{}); err == nil {
		t.Fatal("no URL: no error")
	}
}

// xorChunk is an XOR chunk of the float samples (t, v) given in pairs.
func xorChunk(t *testing.T, tv ...float64) prompb.Chunk {
	t.Helper()
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(tv); i += 2 {
		app.Append(0, int64(tv[i]), tv[i+1])
	}
	return prompb.Chunk{MinTimeMs: int64(tv[0]), MaxTimeMs: int64(tv[len(tv)-2]), Type: prompb.Chunk_XOR, Data: c.Bytes()}
}

func writeFrame(t *testing.T, w io.Writer, msg *prompb.ChunkedReadResponse, corrupt bool) {
	t.Helper()
	data, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var hdr [binary.MaxVarintLen64 + 4]byte
	n := binary.PutUvarint(hdr[:], uint64(len(data)))
	sum := crc32.Checksum(data, castagnoli)
	if corrupt {
		sum++
	}
	binary.BigEndian.PutUint32(hdr[n:], sum)
	if _, err := w.Write(append(hdr[:n+4], data...)); err != nil {
		t.Error(err)
	}
}

// TestRemoteReadProtocol checks the request the querier sends and how it reads responses,
// against a fake Prometheus.
func TestRemoteReadProtocol(t *testing.T) {
	a := labels.FromStrings("__name__", "up", "job", "a")
	b := labels.FromStrings("__name__", "up", "job", "b")
	frames := []*prompb.ChunkedReadResponse{
		// Series b first: Prometheus sorts by its own labels, the querier sorts again.
		{ChunkedSeries: []*prompb.ChunkedSeries{{Labels: prompb.FromLabels(b, nil), Chunks: []prompb.Chunk{xorChunk(t, 1000, 5)}}}},
		// Series a, split over two frames.
		{ChunkedSeries: []*prompb.ChunkedSeries{{Labels: prompb.FromLabels(a, nil), Chunks: []prompb.Chunk{xorChunk(t, 1000, 1, 2000, 2)}}}},
		{ChunkedSeries: []*prompb.ChunkedSeries{{Labels: prompb.FromLabels(a, nil), Chunks: []prompb.Chunk{xorChunk(t, 3000, 3)}}}},
	}
	for _, tc := range []struct {
		name    string
		respond func(w http.ResponseWriter)
		want    string // series as label set: samples; or the error's start
	}{
		{"frames", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
			for _, f := range frames {
				writeFrame(t, w, f, false)
			}
		}, `{__name__="up", job="a"}: 1000=1 2000=2 3000=3; {__name__="up", job="b"}: 1000=5; `},
		{"corrupt frame", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
			writeFrame(t, w, frames[0], true)
		}, "error: remote read: corrupt frame"},
		{"truncated frame", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
			_, _ = w.Write([]byte{100, 0, 0, 0, 0, 1, 2})
		}, "error: remote read: frame data: unexpected EOF"},
		{"samples response", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/x-protobuf")
		}, "error: remote read: response of type"},
		{"server error", func(w http.ResponseWriter) {
			http.Error(w, "too many queries", http.StatusServiceUnavailable)
		}, "error: remote read: 503 Service Unavailable: too many queries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var request prompb.ReadRequest
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				data, err := snappy.Decode(nil, body)
				if r.URL.Path != "/api/v1/read" || r.Header.Get("Content-Encoding") != "snappy" || err != nil || request.Unmarshal(data) != nil {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				tc.respond(w)
			}))
			defer srv.Close()
			q := &promQuerier{client: srv.Client(), base: srv.URL, mint: 500, maxt: 5000}
			set := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up"), labels.MustNewMatcher(labels.MatchRegexp, "job", "a|b"))
			got := render(set)
			if !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			qr := request.Queries
			if len(qr) != 1 || qr[0].StartTimestampMs != 500 || qr[0].EndTimestampMs != 5000 || len(qr[0].Matchers) != 2 ||
				qr[0].Matchers[1].Type != prompb.LabelMatcher_RE || qr[0].Matchers[1].Value != "a|b" ||
				len(request.AcceptedResponseTypes) != 1 || request.AcceptedResponseTypes[0] != prompb.ReadRequest_STREAMED_XOR_CHUNKS {
				t.Fatalf("request %+v", request)
			}
		})
	}
}

// render writes a chunk series set as "labels: t=v ...; " per series, or "error: ...".
func render(set storage.ChunkSeriesSet) string {
	var b strings.Builder
	for set.Next() {
		fmt.Fprintf(&b, "%s:", set.At().Labels())
		it := set.At().Iterator(nil)
		for it.Next() {
			si := it.At().Chunk.Iterator(nil)
			for si.Next() == chunkenc.ValFloat {
				ts, v := si.At()
				fmt.Fprintf(&b, " %d=%v", ts, v)
			}
		}
		b.WriteString("; ")
	}
	if err := set.Err(); err != nil {
		return "error: " + err.Error()
	}
	return b.String()
}

func TestSelector(t *testing.T) {
	m := labels.MustNewMatcher
	for _, tc := range []struct {
		ms   []*labels.Matcher
		want string
	}{
		{nil, ""},
		{[]*labels.Matcher{m(labels.MatchEqual, "", "")}, ""},
		{[]*labels.Matcher{m(labels.MatchEqual, "job", "a"), m(labels.MatchNotRegexp, "i", `1\d`)}, `{job="a",i!~"1\\d"}`},
		{[]*labels.Matcher{m(labels.MatchNotEqual, "job", "a")}, `{job!="a",__name__=~".+"}`},
	} {
		if got := selector(tc.ms); got != tc.want {
			t.Errorf("selector(%v) = %s, want %s", tc.ms, got, tc.want)
		}
	}
}
