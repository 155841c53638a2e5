package storeapi

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
)

// Endpoint is a StoreAPI endpoint a Queryable fans out to, with what its last Info call
// said. Like a non-strict endpoint of the Thanos Querier, it is queried only while its
// last Info call succeeded.
type Endpoint struct {
	client *Client

	mu        sync.Mutex
	info      RemoteInfo
	healthy   bool
	lastErr   error
	lastCheck time.Time
}

// NewEndpoint dials the StoreAPI at addr (see Dial). It is unhealthy until refreshed.
func NewEndpoint(addr string, opts ...grpc.DialOption) (*Endpoint, error) {
	c, err := Dial(addr, opts...)
	if err != nil {
		return nil, err
	}
	return &Endpoint{client: c}, nil
}

// Addr is the endpoint's address.
func (e *Endpoint) Addr() string { return e.client.Addr() }

// Client is the endpoint's connection.
func (e *Endpoint) Client() *Client { return e.client }

// Close closes the endpoint's connection.
func (e *Endpoint) Close() error { return e.client.Close() }

// Refresh calls Info with timeout and records the answer. A failure makes the endpoint
// unhealthy but keeps its last known metadata for Stores.
func (e *Endpoint) Refresh(ctx context.Context, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	info, err := e.client.Info(ctx)

	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastCheck = time.Now()
	e.lastErr = err
	e.healthy = err == nil
	if err == nil {
		e.info = info
	}
}

// queryInfo returns the endpoint's metadata and whether it may be queried.
func (e *Endpoint) queryInfo() (RemoteInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.info, e.healthy
}

// matches reports whether a request for [mint, maxt] with matchers ms may find data at an
// endpoint with info: the time ranges overlap, and some advertised label set (or none at
// all) agrees with every matcher on a label it has.
func (info RemoteInfo) matches(mint, maxt int64, ms []*labels.Matcher) bool {
	if mint > info.MaxTime || maxt < info.MinTime {
		return false
	}
	if len(info.LabelSets) == 0 {
		return true
	}
	for _, ls := range info.LabelSets {
		if labelSetMatches(ls, ms) {
			return true
		}
	}
	return false
}

func labelSetMatches(ls labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if ls.Has(m.Name) && !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// EndpointStatus is one entry of /api/v1/stores, in the Thanos Querier's JSON shape.
type EndpointStatus struct {
	Name          string          `json:"name"`
	Healthy       bool            `json:"healthy"`
	LastCheck     time.Time       `json:"lastCheck"`
	LastError     *string         `json:"lastError"`
	LabelSets     []labels.Labels `json:"labelSets"`
	MinTime       int64           `json:"minTime"`
	MaxTime       int64           `json:"maxTime"`
	ComponentType string          `json:"-"` // Thanos groups the list by it
}

// Status returns the endpoint's state for /api/v1/stores.
func (e *Endpoint) Status() EndpointStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EndpointStatus{
		Name:          e.client.Addr(),
		Healthy:       e.healthy,
		LastCheck:     e.lastCheck,
		LabelSets:     slices.Clone(e.info.LabelSets),
		MinTime:       e.info.MinTime,
		MaxTime:       e.info.MaxTime,
		ComponentType: e.info.ComponentType,
	}
	if st.LabelSets == nil {
		st.LabelSets = []labels.Labels{}
	}
	if e.lastErr != nil {
		msg := e.lastErr.Error()
		st.LastError = &msg
	}
	return st
}

func sortStatuses(sts []EndpointStatus) {
	slices.SortFunc(sts, func(a, b EndpointStatus) int { return strings.Compare(a.Name, b.Name) })
}
