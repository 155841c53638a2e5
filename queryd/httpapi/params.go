package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// Default bounds of optional time ranges. They are Prometheus' values (deliberately not
// the int64 extremes), so clients that echo them back parse.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()

	minTimeFormatted = minTime.Format(time.RFC3339Nano)
	maxTimeFormatted = maxTime.Format(time.RFC3339Nano)
)

// parseTime reads a time as unix seconds (with a fraction) or RFC 3339.
func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	// time.Parse handles 4-digit years only; accept the defaults when a client sends them back.
	switch s {
	case minTimeFormatted:
		return minTime, nil
	case maxTimeFormatted:
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// timeParam reads an optional time parameter.
func timeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time value for '%s': %w", name, err)
	}
	return t, nil
}

// parseDuration reads seconds (with a fraction) or a Prometheus duration ("5m", "1h30m").
func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if math.IsNaN(ts) || ts >= float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

// limitParam reads "limit"; 0 means none.
func limitParam(r *http.Request) (int, *apiError) {
	v := r.FormValue("limit")
	if v == "" {
		return 0, nil
	}
	limit, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalidParam(err, "limit")
	}
	if limit < 0 {
		return 0, invalidParam(errors.New("limit must be non-negative"), "limit")
	}
	return limit, nil
}

// hintLimit asks storage for one more result than the limit, so truncation can be
// reported.
func hintLimit(limit int) int {
	if limit > 0 && limit < math.MaxInt {
		return limit + 1
	}
	return limit
}

// matcherSets parses match[] selectors; each must have a matcher that rejects the empty
// value, or it would select every series.
func (a *API) matcherSets(values []string) ([][]*labels.Matcher, error) {
	sets, err := a.parser.ParseMetricSelectors(values)
	if err != nil {
		return nil, err
	}
next:
	for _, ms := range sets {
		for _, m := range ms {
			if m != nil && !m.Matches("") {
				continue next
			}
		}
		return nil, errors.New("match[] must contain at least one non-empty matcher")
	}
	return sets, nil
}

// Downsampled data, as the Thanos Querier reads it.
const (
	// autoResolutionDivisor: max_source_resolution=auto reads data as coarse as a fifth of
	// the step of a range query.
	autoResolutionDivisor = 5
	defaultLookbackDelta  = 5 * time.Minute
	// coarseLookbackDelta is the lookback delta of queries that read 1h data.
	coarseLookbackDelta = time.Hour
)

// readOptions reads "max_source_resolution": "auto" for auto (a fifth of the step of a
// range query), a duration ("5m", "1h") or seconds; absent means 0, raw data only.
func readOptions(r *http.Request, auto time.Duration) (ReadOptions, *apiError) {
	const name = "max_source_resolution"
	v := r.FormValue(name)
	switch v {
	case "":
		return ReadOptions{}, nil
	case "auto":
		return ReadOptions{MaxSourceResolution: auto}, nil
	}
	d, err := parseDuration(v)
	if err != nil {
		return ReadOptions{}, invalidParam(err, name)
	}
	if d < 0 {
		return ReadOptions{}, invalidParam(fmt.Errorf("negative %s is not accepted. Try a positive integer", name), name)
	}
	return ReadOptions{MaxSourceResolution: d}, nil
}
