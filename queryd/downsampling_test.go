package queryd

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/internal/block"
	"github.com/blockflow/blockflow/internal/objstore"
	"github.com/blockflow/blockflow/internal/promref"
	"github.com/blockflow/blockflow/internal/synth"
	"github.com/blockflow/blockflow/queryd/internal/blocktest"
	"github.com/blockflow/blockflow/schemas"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
	"github.com/blockflow/blockflow/workers/downsample"
)

// dsStart is the first sample of the downsampling fixture: a multiple of two days, so that
// synth writes one 2d block.
var dsStart = time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)

// dsFixture is a raw 2d block of synthetic series (counters and gauges scraped every 15s)
// over [S, S+48h), its 5m and 1h versions, and a raw 2h block [S+48h, S+50h) of the same
// series that nothing downsampled yet, in a filesystem bucket with their catalogue records.
type dsFixture struct {
	bkt                    *blocktest.CountingBucket
	recs                   []schemas.BlockRecord
	raw, raw2h, ds5m, ds1h ulid.ULID
	start                  int64 // S, ms
}

// synthBlock writes span of n synthetic series from start as one raw block with the
// external labels ext and returns its directory and meta.
func synthBlock(tb testing.TB, n int, start time.Time, span time.Duration) (string, block.Meta) {
	tb.Helper()
	dir := tb.TempDir()
	metas, err := synth.WriteBlocks(context.Background(), dir, synth.Spec{Series: n, Start: start, Span: span, BlockRange: span})
	if err != nil {
		tb.Fatal(err)
	}
	if len(metas) != 1 {
		tb.Fatalf("%d blocks, want 1", len(metas))
	}
	bdir := filepath.Join(dir, metas[0].ULID.String())
	meta, err := block.ReadMetaFile(bdir)
	if err != nil {
		tb.Fatal(err)
	}
	meta.Thanos.Labels = ext
	return bdir, meta
}

// downsampleBlock downsamples the block in dir to resolution, as the downsample worker does.
func downsampleBlock(tb testing.TB, dir string, meta block.Meta, resolution int64) (string, block.Meta) {
	tb.Helper()
	id := schemas.DownsampleOutputULID(meta.ULID, resolution)
	out := filepath.Join(tb.TempDir(), id.String())
	res, err := downsample.Block(context.Background(), zerolog.Nop(), dir, meta, out, id, resolution)
	if err != nil {
		tb.Fatal(err)
	}
	return out, res.Meta
}

// uploadAt uploads the block in dir with its resolution and returns its record.
func uploadAt(tb testing.TB, bkt objstore.Bucket, dir string, resolution int64) schemas.BlockRecord {
	tb.Helper()
	return blocktest.Upload(tb, bkt, dir, ext, func(m *block.Meta) {
		m.Thanos.Downsample.Resolution = resolution
		if resolution > 0 {
			m.Thanos.Source = "compactor"
		}
	})
}

func newDSFixture(t testing.TB) *dsFixture {
	t.Helper()
	fs, err := objstore.NewFilesystem(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &dsFixture{bkt: blocktest.NewCountingBucket(fs), start: dsStart.UnixMilli()}
	const series = 8
	rawDir, rawMeta := synthBlock(t, series, dsStart, 48*time.Hour)
	dir5m, meta5m := downsampleBlock(t, rawDir, rawMeta, schemas.Res5m)
	dir1h, _ := downsampleBlock(t, dir5m, meta5m, schemas.Res1h)
	dir2h, _ := synthBlock(t, series, dsStart.Add(48*time.Hour), 2*time.Hour)
	for _, b := range []struct {
		dir string
		res int64
		id  *ulid.ULID
	}{{rawDir, schemas.ResRaw, &f.raw}, {dir5m, schemas.Res5m, &f.ds5m}, {dir1h, schemas.Res1h, &f.ds1h}, {dir2h, schemas.ResRaw, &f.raw2h}} {
		rec := uploadAt(t, f.bkt, b.dir, b.res)
		*b.id = rec.ULID
		f.recs = append(f.recs, rec)
	}
	return f
}

// at is S + d, in seconds as the HTTP API takes it.
func (f *dsFixture) at(d time.Duration) string {
	return strconv.FormatFloat(float64(f.start+d.Milliseconds())/1000, 'f', 3, 64)
}

// chunkReads counts the range reads of each block's chunks.
func (f *dsFixture) chunkReads() map[ulid.ULID]int {
	out := map[ulid.ULID]int{}
	for _, id := range []ulid.ULID{f.raw, f.raw2h, f.ds5m, f.ds1h} {
		out[id] = f.bkt.Calls("GetRange", id.String()+"/chunks/000001")
	}
	return out
}

func (f *dsFixture) name(id ulid.ULID) string {
	switch id {
	case f.raw:
		return "raw 2d"
	case f.raw2h:
		return "raw 2h"
	case f.ds5m:
		return "5m"
	case f.ds1h:
		return "1h"
	}
	return id.String()
}

// matrix is a range query's answer: values by series, with timestamps in ms.
type matrix map[string][][2]float64

func (h *harness) matrix(t *testing.T, params url.Values) matrix {
	t.Helper()
	code, body := h.get(t, "/api/v1/query_range", params)
	if code != http.StatusOK {
		t.Fatalf("%v: HTTP %d: %s", params, code, body)
	}
	var res struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatal(err)
	}
	out := matrix{}
	for _, s := range res.Data.Result {
		k := fmt.Sprint(s.Metric)
		for _, p := range s.Values {
			v, err := strconv.ParseFloat(p[1].(string), 64)
			if err != nil {
				t.Fatal(err)
			}
			out[k] = append(out[k], [2]float64{math.Round(p[0].(float64) * 1000), v})
		}
	}
	return out
}

func rangeParams(query, start, end string, step time.Duration, kv ...string) url.Values {
	p := url.Values{"query": {query}, "start": {start}, "end": {end}, "step": {fmt.Sprint(step.Seconds())}}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Set(kv[i], kv[i+1])
	}
	return p
}

// TestDownsampledResolutionChoice: max_source_resolution picks the blocks each selector
// reads, as the Thanos Querier and store gateway pick them: raw data by default, the
// coarsest resolution allowed otherwise, gaps filled from raw data, and rate() and its kin
// no coarser than half their range.
func TestDownsampledResolutionChoice(t *testing.T) {
	f := newDSFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)

	const gauge, counter = "synth_temperature", "synth_requests_total"
	whole := func(q, msr string, step time.Duration) url.Values {
		return rangeParams(q, f.at(2*time.Hour), f.at(46*time.Hour), step, "max_source_resolution", msr)
	}
	for _, tc := range []struct {
		name   string
		path   string
		params url.Values
		want   []ulid.ULID
	}{
		{"absent reads raw", "query_range", whole("max_over_time("+gauge+"[1h])", "", time.Hour), []ulid.ULID{f.raw}},
		{"0s reads raw", "query_range", whole("max_over_time("+gauge+"[1h])", "0s", time.Hour), []ulid.ULID{f.raw}},
		{"5m", "query_range", whole("max_over_time("+gauge+"[1h])", "5m", time.Hour), []ulid.ULID{f.ds5m}},
		{"30m reads 5m", "query_range", whole(gauge, "1800", time.Hour), []ulid.ULID{f.ds5m}},
		{"1h", "query_range", whole("max_over_time("+gauge+"[1h])", "1h", time.Hour), []ulid.ULID{f.ds1h}},
		{"auto at step 1h reads 5m", "query_range", whole(gauge, "auto", time.Hour), []ulid.ULID{f.ds5m}},
		{"auto at step 6h reads 1h", "query_range", whole(gauge, "auto", 6*time.Hour), []ulid.ULID{f.ds1h}},
		{"auto fills the gap from raw", "query_range",
			rangeParams(gauge, f.at(40*time.Hour), f.at(50*time.Hour), time.Hour, "max_source_resolution", "auto"), []ulid.ULID{f.ds5m, f.raw2h}},
		{"rate over 5m caps 1h to raw", "query_range", whole("rate("+counter+"[5m])", "1h", time.Hour), []ulid.ULID{f.raw}},
		{"rate over 1h caps 1h to 5m", "query_range", whole("rate("+counter+"[1h])", "1h", time.Hour), []ulid.ULID{f.ds5m}},
		{"rate over 2h reads 1h", "query_range", whole("rate("+counter+"[2h])", "1h", time.Hour), []ulid.ULID{f.ds1h}},
		{"instant auto reads raw", "query", url.Values{"query": {gauge}, "time": {f.at(20 * time.Hour)}, "max_source_resolution": {"auto"}}, []ulid.ULID{f.raw}},
		{"instant 1h", "query", url.Values{"query": {gauge}, "time": {f.at(20 * time.Hour)}, "max_source_resolution": {"1h"}}, []ulid.ULID{f.ds1h}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.chunkReads()
			code, body := h.get(t, "/api/v1/"+tc.path, tc.params)
			if code != http.StatusOK || !strings.Contains(body, `"result":[{`) {
				t.Fatalf("HTTP %d: %.500s", code, body)
			}
			var read []string
			for id, n := range f.chunkReads() {
				if n > before[id] {
					read = append(read, f.name(id))
				}
			}
			var want []string
			for _, id := range tc.want {
				want = append(want, f.name(id))
			}
			slices.Sort(read)
			slices.Sort(want)
			if !slices.Equal(read, want) {
				t.Errorf("read the chunks of %v, want %v", read, want)
			}
		})
	}
}

// resolutionOf tells which data a sample at ts is from, for a query evaluated at T = 7m30s
// past an hour: raw samples are at most 15s old, 5m windows end 2m30s before T or earlier
// (at 5m), 1h windows 7m30s before T or earlier.
func resolutionOf(evalT, ts int64) string {
	switch age := evalT - ts; {
	case age <= 15_000:
		return "raw"
	case age >= 150_000 && age <= 450_000:
		return "5m"
	case age >= 450_000:
		return "1h"
	}
	return fmt.Sprint("a sample ", evalT-ts, "ms old")
}

// TestDownsampledGapFill: with max_source_resolution=auto at a step of 1h (12m: 5m data),
// timestamp() shows 5m samples until the 5m block ends and raw samples after it, where
// only raw data exists; at 1h, 1h samples.
func TestDownsampledGapFill(t *testing.T) {
	f := newDSFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	from := 40*time.Hour + 7*time.Minute + 30*time.Second
	for _, tc := range []struct {
		msr    string
		before string // the resolution before S+48h; raw after
	}{{"auto", "5m"}, {"1h", "1h"}, {"0", "raw"}} {
		m := h.matrix(t, rangeParams("timestamp(synth_temperature)", f.at(from), f.at(from+9*time.Hour), time.Hour, "max_source_resolution", tc.msr))
		if len(m) != 2 {
			t.Fatalf("%s: %d series, want 2", tc.msr, len(m))
		}
		for lset, points := range m {
			if len(points) != 10 {
				t.Fatalf("%s: %s: %d points, want 10", tc.msr, lset, len(points))
			}
			for _, p := range points {
				evalT, ts := int64(p[0]), int64(math.Round(p[1]*1000))
				want := tc.before
				if evalT > f.start+48*hour {
					want = "raw"
				}
				if got := resolutionOf(evalT, ts); got != want {
					t.Errorf("%s: %s at S+%s: %s data, want %s", tc.msr, lset, time.Duration(evalT-f.start)*time.Millisecond, got, want)
				}
			}
		}
	}
}

// TestDownsampledMatchesRaw: functions evaluated on 5m data through the aggregate each one
// asks for agree with raw data (max_over_time within 1%, rate within 2%), and
// max_source_resolution=0, or rate() over too short a range for 1h data, answers exactly
// as raw data does.
func TestDownsampledMatchesRaw(t *testing.T) {
	f := newDSFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	from, to := f.at(2*time.Hour), f.at(46*time.Hour)

	for _, tc := range []struct {
		query     string
		msr       string
		tolerance float64
	}{
		{"max_over_time(synth_temperature[1h])", "5m", 0.01},
		{"max_over_time(synth_queue_depth[1h])", "5m", 0.01},
		{"min_over_time(synth_temperature[1h])", "5m", 0.01},
		{"avg_over_time(synth_temperature[1h])", "5m", 0.01},
		{"rate(synth_requests_total[1h])", "5m", 0.02},
		{"rate(synth_bytes_total[1h])", "5m", 0.02},
		{"increase(synth_requests_total[1h])", "5m", 0.02},
		{"max_over_time(synth_temperature[2h])", "1h", 0.01},
	} {
		t.Run(tc.query+" at "+tc.msr, func(t *testing.T) {
			want := h.matrix(t, rangeParams(tc.query, from, to, time.Hour))
			got := h.matrix(t, rangeParams(tc.query, from, to, time.Hour, "max_source_resolution", tc.msr))
			if len(want) == 0 || len(got) != len(want) {
				t.Fatalf("%d series on %s data, %d on raw", len(got), tc.msr, len(want))
			}
			worst := 0.0
			for lset, wps := range want {
				gps := got[lset]
				if len(gps) != len(wps) {
					t.Fatalf("%s: %d points, want %d", lset, len(gps), len(wps))
				}
				for i, w := range wps {
					diff := math.Abs(gps[i][1]-w[1]) / math.Max(math.Abs(w[1]), 1e-9)
					worst = max(worst, diff)
					if gps[i][0] != w[0] || diff > tc.tolerance {
						t.Errorf("%s at %v: %v, raw %v", lset, w[0], gps[i][1], w[1])
					}
				}
			}
			t.Logf("largest relative difference %.3g%%", 100*worst)
		})
	}

	for _, tc := range []struct{ query, msr string }{
		{"rate(synth_requests_total[5m])", "1h"},
		{"synth_temperature", "0s"},
		{"max_over_time(synth_temperature[1h])", "0"},
	} {
		_, want := h.get(t, "/api/v1/query_range", rangeParams(tc.query, from, to, time.Hour))
		_, got := h.get(t, "/api/v1/query_range", rangeParams(tc.query, from, to, time.Hour, "max_source_resolution", tc.msr))
		if got != want {
			t.Errorf("%s at %s differs from raw data:\n%.300s\n%.300s", tc.query, tc.msr, got, want)
		}
	}
}

// TestStoreAPIDownsampled: queryd's StoreAPI serves the blocks max_resolution_window
// allows, gaps filled from raw data: downsampled chunks carry exactly the requested
// aggregates and no raw data; raw chunks come as ever.
func TestStoreAPIDownsampled(t *testing.T) {
	f := newDSFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	c := serveStoreAPI(t, h.srv.RegisterStoreAPI)
	name := []*storepb.LabelMatcher{{Type: storepb.LabelMatcher_EQ, Name: "__name__", Value: "synth_requests_total"}}

	type fields struct{ raw, count, sum, min, max, counter bool }
	for _, tc := range []struct {
		name       string
		window     int64
		aggregates []storepb.Aggr
		before     fields // chunks of [S, S+48h)
		after      fields // chunks of [S+48h, S+50h): raw only
	}{
		{"raw", 0, []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}, fields{raw: true}, fields{raw: true}},
		{"count and sum at 5m", schemas.Res5m, []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}, fields{count: true, sum: true}, fields{raw: true}},
		{"counter at 1h", schemas.Res1h, []storepb.Aggr{storepb.Aggr_COUNTER}, fields{counter: true}, fields{raw: true}},
		{"min and max at 1h", schemas.Res1h, []storepb.Aggr{storepb.Aggr_MIN, storepb.Aggr_MAX}, fields{min: true, max: true}, fields{raw: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := seriesOf(t, c, &storepb.SeriesRequest{
				MinTime: f.start + 40*hour, MaxTime: f.start + 50*hour, Matchers: name,
				MaxResolutionWindow: tc.window, Aggregates: tc.aggregates,
			})
			if len(ss) != 2 {
				t.Fatalf("%d series, want 2", len(ss))
			}
			for _, s := range ss {
				var before, after int
				for _, ch := range s.GetChunks() {
					got := fields{ch.GetRaw() != nil, ch.GetCount() != nil, ch.GetSum() != nil, ch.GetMin() != nil, ch.GetMax() != nil, ch.GetCounter() != nil}
					want := tc.before
					if ch.GetMinTime() >= f.start+48*hour {
						want = tc.after
						after++
					} else {
						before++
					}
					if got != want {
						t.Fatalf("chunk [%d,%d]: %+v, want %+v", ch.GetMinTime(), ch.GetMaxTime(), got, want)
					}
				}
				if before == 0 || after == 0 {
					t.Fatalf("%d chunks before S+48h, %d after", before, after)
				}
			}
		})
	}
}

// TestStoreAPIDownsampledAnswersAsQueryd: a queryd reading another one through its StoreAPI
// answers queries on downsampled data exactly as the other does itself.
func TestStoreAPIDownsampledAnswersAsQueryd(t *testing.T) {
	f := newDSFixture(t)
	h := start(t, f.bkt, blocktest.Static(f.recs, nil), t.TempDir())
	h.waitReady(t)
	c := serveStoreAPI(t, h.srv.RegisterStoreAPI)
	querier := startWith(t, Options{Catalogue: blocktest.Static(nil, nil), Endpoints: []string{c.Addr()}})
	querier.waitHealthy(t, 1)

	at := func(d time.Duration) time.Time { return time.UnixMilli(f.start + d.Milliseconds()) }
	var queries []promref.Query
	for _, q := range []string{
		`synth_temperature`,
		`max_over_time(synth_temperature[1h])`,
		`min_over_time(synth_queue_depth[30m])`,
		`sum_over_time(synth_queue_depth[1h])`,
		`count_over_time(synth_temperature[1h])`,
		`rate(synth_requests_total[1h])`,
		`sum by (instance) (increase(synth_bytes_total[2h]))`,
		`rate(synth_requests_total[5m])`,
		`avg(synth_temperature)`,
	} {
		for _, msr := range []string{"5m", "1h", "auto"} {
			for _, query := range []promref.Query{
				promref.Range(q, at(time.Hour), at(50*time.Hour), time.Hour),
				promref.Range(q, at(44*time.Hour), at(49*time.Hour), 5*time.Minute),
				promref.Instant(q, at(47*time.Hour+5*time.Minute)),
			} {
				query.Params.Set("max_source_resolution", msr)
				queries = append(queries, query)
			}
		}
	}
	for _, q := range queries {
		a, err := promref.Fetch(h.http.URL, q)
		if err != nil || a.Code != http.StatusOK || !strings.Contains(string(a.Body), `"result":[{`) {
			t.Fatalf("%s: no data: %v %d %.300s", q, err, a.Code, a.Body)
		}
	}
	promref.Compare(t, h.http.URL, querier.http.URL, queries)
}
