package promref

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// Query is one Prometheus HTTP API call: a GET of /api/v1/<Path>?<Params>.
type Query struct {
	Path   string // under /api/v1/, e.g. "query_range" or "label/job/values"
	Params url.Values
}

func (q Query) String() string {
	if len(q.Params) == 0 {
		return "/api/v1/" + q.Path
	}
	return "/api/v1/" + q.Path + "?" + q.Params.Encode()
}

// Instant is an instant query of expr at t.
func Instant(expr string, t time.Time) Query {
	return Query{Path: "query", Params: url.Values{"query": {expr}, "time": {formatTime(t)}}}
}

// Range is a range query of expr over [start, end] every step.
func Range(expr string, start, end time.Time, step time.Duration) Query {
	return Query{Path: "query_range", Params: url.Values{
		"query": {expr},
		"start": {formatTime(start)},
		"end":   {formatTime(end)},
		"step":  {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)},
	}}
}

// LabelNames lists label names, optionally of the series matching the selectors.
func LabelNames(selectors ...string) Query {
	return Query{Path: "labels", Params: matchParams(selectors)}
}

// LabelValues lists the values of label name, optionally in the series matching the selectors.
func LabelValues(name string, selectors ...string) Query {
	return Query{Path: "label/" + url.PathEscape(name) + "/values", Params: matchParams(selectors)}
}

// Series lists the series matching the selectors over [start, end].
func Series(start, end time.Time, selectors ...string) Query {
	p := matchParams(selectors)
	p.Set("start", formatTime(start))
	p.Set("end", formatTime(end))
	return Query{Path: "series", Params: p}
}

func matchParams(selectors []string) url.Values {
	p := url.Values{}
	for _, s := range selectors {
		p.Add("match[]", s)
	}
	return p
}

// formatTime renders t as the API's float seconds, exactly to the millisecond.
func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// Compare runs each query against the reference server (ref) and the candidate (got),
// both base URLs, and fails the test with a readable diff for every query whose answers
// differ. dropLabels are removed from the candidate's series and label names: they are
// the external labels blockflow keeps and Prometheus leaves out of query results.
// It reports whether all answers matched.
func Compare(t testing.TB, ref, got string, queries []Query, dropLabels ...string) bool {
	t.Helper()
	ok := true
	for _, q := range queries {
		refAnswer, err := Fetch(ref, q)
		if err != nil {
			t.Errorf("%s: reference: %v", q, err)
			ok = false
			continue
		}
		gotAnswer, err := Fetch(got, q)
		if err != nil {
			t.Errorf("%s: candidate: %v", q, err)
			ok = false
			continue
		}
		diff, err := Diff(q, refAnswer, gotAnswer, dropLabels...)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			ok = false
			continue
		}
		if diff != "" {
			t.Errorf("%s: answers differ (- reference, + blockflow):\n%s", q, diff)
			ok = false
		}
	}
	return ok
}

// Answer is an HTTP API response as received.
type Answer struct {
	Code int
	Body []byte
}

// fetchTimeout bounds one API call; long range queries on a busy machine take seconds.
const fetchTimeout = 60 * time.Second

// Fetch GETs q from the server at base.
func Fetch(base string, q Query) (Answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+q.String(), nil)
	if err != nil {
		return Answer{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Answer{}, fmt.Errorf("read body: %w", err)
	}
	return Answer{Code: resp.StatusCode, Body: body}, nil
}

// Diff compares two answers to q and returns "" when they are the same, else a readable
// account of the differences. Two answers are the same when their HTTP status, API
// status, error type, result type, presence of warnings and of infos are equal, and
// their results hold the same series with the same samples. Sample values are compared
// as the exact strings Prometheus emits; timestamps as numbers; series and samples in
// any order. Error messages are not compared: only their type is part of the API.
func Diff(q Query, ref, got Answer, dropLabels ...string) (string, error) {
	r, err := normalize(q, ref, nil)
	if err != nil {
		return "", fmt.Errorf("reference answer: %w", err)
	}
	g, err := normalize(q, got, dropLabels)
	if err != nil {
		return "", fmt.Errorf("candidate answer: %w", err)
	}
	var b strings.Builder
	for _, f := range []struct {
		name     string
		ref, got string
	}{
		{"HTTP status", strconv.Itoa(r.code), strconv.Itoa(g.code)},
		{"status", r.status, g.status},
		{"errorType", r.errorType, g.errorType},
		{"resultType", r.resultType, g.resultType},
		{"warnings", presence(r.warnings), presence(g.warnings)},
		{"infos", presence(r.infos), presence(g.infos)},
	} {
		if f.ref != f.got {
			fmt.Fprintf(&b, "%s: %q != %q\n", f.name, f.ref, f.got)
		}
	}
	if r.errorType != g.errorType || r.status != g.status {
		fmt.Fprintf(&b, "error: %q / %q\n", r.error, g.error)
	}
	onlyRef, onlyGot := subtract(r.lines, g.lines), subtract(g.lines, r.lines)
	writeLines(&b, "-", "reference", onlyRef, len(r.lines))
	writeLines(&b, "+", "blockflow", onlyGot, len(g.lines))
	return b.String(), nil
}

func presence(msgs []string) string {
	if len(msgs) == 0 {
		return "absent"
	}
	return "present: " + strings.Join(msgs, "; ")
}

// maxDiffLines bounds each side of a diff: the first differences explain the rest.
const maxDiffLines = 20

func writeLines(b *strings.Builder, sign, side string, lines []string, total int) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "%d of %d result lines only in the %s answer:\n", len(lines), total, side)
	for i, l := range lines {
		if i == maxDiffLines {
			fmt.Fprintf(b, "%s ... %d more\n", sign, len(lines)-i)
			break
		}
		fmt.Fprintf(b, "%s %s\n", sign, l)
	}
}

// subtract returns the lines of a not matched by a line of b, both sorted.
func subtract(a, b []string) []string {
	var out []string
	i, j := 0, 0
	for i < len(a) {
		switch {
		case j == len(b) || a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			j++
		default:
			i++
			j++
		}
	}
	return out
}

// normalized is an answer reduced to what comparisons look at: the result as sorted
// lines, one per sample, series or name.
type normalized struct {
	code                     int
	status, errorType, error string
	resultType               string
	warnings, infos          []string
	lines                    []string
}

type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

// point is a [timestamp, "value"] pair; a native histogram puts an object in place of the value.
type point [2]json.RawMessage

type seriesResult struct {
	Metric     map[string]string `json:"metric"`
	Value      *point            `json:"value"`
	Histogram  *point            `json:"histogram"`
	Values     []point           `json:"values"`
	Histograms []point           `json:"histograms"`
}

func normalize(q Query, a Answer, dropLabels []string) (normalized, error) {
	n := normalized{code: a.Code}
	var resp apiResponse
	if err := json.Unmarshal(a.Body, &resp); err != nil {
		return n, fmt.Errorf("HTTP %d, not API JSON (%v): %.200s", a.Code, err, a.Body)
	}
	n.status, n.errorType, n.error = resp.Status, resp.ErrorType, resp.Error
	n.warnings, n.infos = resp.Warnings, resp.Infos
	if len(resp.Data) == 0 || string(resp.Data) == "null" {
		return n, nil
	}
	drop := func(m map[string]string) labels.Labels {
		for _, name := range dropLabels {
			delete(m, name)
		}
		return labels.FromMap(m)
	}
	var err error
	switch q.Path {
	case "query", "query_range":
		n.resultType, n.lines, err = resultLines(resp.Data, drop)
	case "series":
		var sets []map[string]string
		if err = json.Unmarshal(resp.Data, &sets); err == nil {
			for _, m := range sets {
				n.lines = append(n.lines, drop(m).String())
			}
		}
	default: // labels, label/<name>/values
		if err = json.Unmarshal(resp.Data, &n.lines); err == nil && q.Path == "labels" {
			n.lines = slices.DeleteFunc(n.lines, func(name string) bool { return slices.Contains(dropLabels, name) })
		}
	}
	if err != nil {
		return n, fmt.Errorf("data of /api/v1/%s: %w", q.Path, err)
	}
	slices.Sort(n.lines)
	return n, nil
}

// resultLines turns a query result into one line per sample: `{labels} @t value`.
func resultLines(data json.RawMessage, drop func(map[string]string) labels.Labels) (string, []string, error) {
	var res struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return "", nil, err
	}
	var lines []string
	add := func(series string, p point) error {
		line, err := pointLine(series, p)
		lines = append(lines, line)
		return err
	}
	switch res.ResultType {
	case "scalar", "string":
		var p point
		if err := json.Unmarshal(res.Result, &p); err != nil {
			return res.ResultType, nil, err
		}
		return res.ResultType, lines, add("", p)
	case "vector", "matrix":
		var series []seriesResult
		if err := json.Unmarshal(res.Result, &series); err != nil {
			return res.ResultType, nil, err
		}
		for _, s := range series {
			name := drop(s.Metric).String()
			for _, p := range append(append(s.Values, s.Histograms...), ptrs(s.Value, s.Histogram)...) {
				if err := add(name, p); err != nil {
					return res.ResultType, nil, err
				}
			}
			if s.Value == nil && s.Histogram == nil && len(s.Values) == 0 && len(s.Histograms) == 0 {
				lines = append(lines, name+" (no samples)")
			}
		}
		return res.ResultType, lines, nil
	default:
		return res.ResultType, nil, fmt.Errorf("unknown resultType %q", res.ResultType)
	}
}

func ptrs(ps ...*point) []point {
	var out []point
	for _, p := range ps {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// pointLine renders one sample. The timestamp is compared as a number (1 and 1.000 are the
// same instant); the value as the exact string, or a native histogram as compact JSON.
func pointLine(series string, p point) (string, error) {
	ts, err := strconv.ParseFloat(string(p[0]), 64)
	if err != nil {
		return "", fmt.Errorf("timestamp %s: %w", p[0], err)
	}
	var value bytes.Buffer
	if err := json.Compact(&value, p[1]); err != nil {
		return "", fmt.Errorf("value %s: %w", p[1], err)
	}
	return fmt.Sprintf("%s @%s %s", series, strconv.FormatFloat(ts, 'f', -1, 64), value.String()), nil
}
