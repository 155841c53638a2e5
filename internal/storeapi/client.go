package storeapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/blockflow/blockflow/schemas/thanos/info/infopb"
	"github.com/blockflow/blockflow/schemas/thanos/store/storepb"
)

// Client is a connection to one StoreAPI endpoint.
type Client struct {
	addr  string
	conn  *grpc.ClientConn
	store storepb.StoreClient
	info  infopb.InfoClient
}

// Dial returns a client for the StoreAPI at addr (host:port). It connects lazily, with the
// Thanos Querier's settings (plaintext, keepalive every 10s, any message size); opts come
// after those, e.g. transport credentials, or
// grpc.WithDefaultCallOptions(grpc.UseCompressor(snappy.Name)).
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	conn, err := grpc.NewClient(addr, append(clientDialOptions(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("storeapi client for %s: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, store: storepb.NewStoreClient(conn), info: infopb.NewInfoClient(conn)}, nil
}

// Addr is the address the client was dialled with.
func (c *Client) Addr() string { return c.addr }

// Store is the thanos.Store client.
func (c *Client) Store() storepb.StoreClient { return c.store }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// RemoteInfo is what an endpoint says about its data.
type RemoteInfo struct {
	Info
	// WithoutReplicaLabels is true when the endpoint strips without_replica_labels itself.
	WithoutReplicaLabels bool
}

// Info asks the endpoint for its metadata as the Thanos Querier does (waiting for the
// connection to be ready), falling back to the legacy Store.Info for endpoints that have
// no thanos.info.Info. It fails when the endpoint serves no StoreAPI.
func (c *Client) Info(ctx context.Context) (RemoteInfo, error) {
	resp, err := c.info.Info(ctx, &infopb.InfoRequest{}, grpc.WaitForReady(true))
	if status.Code(err) == codes.Unimplemented {
		return c.legacyInfo(ctx)
	}
	if err != nil {
		return RemoteInfo{}, fmt.Errorf("info: %w", err)
	}
	if resp.GetStore() == nil {
		return RemoteInfo{}, errors.New("info: endpoint serves no StoreAPI")
	}
	ri := RemoteInfo{
		Info: Info{
			ComponentType: resp.GetComponentType(),
			MinTime:       resp.GetStore().GetMinTime(),
			MaxTime:       resp.GetStore().GetMaxTime(),
		},
		WithoutReplicaLabels: resp.GetStore().GetSupportsWithoutReplicaLabels(),
	}
	for _, ls := range resp.GetLabelSets() {
		if lset := LabelsFromProto(ls.GetLabels()); !lset.IsEmpty() {
			ri.LabelSets = append(ri.LabelSets, lset)
		}
	}
	for _, ti := range resp.GetStore().GetTsdbInfos() {
		ri.TSDBInfos = append(ri.TSDBInfos, TSDBInfo{
			Labels:  LabelsFromProto(ti.GetLabels().GetLabels()),
			MinTime: ti.GetMinTime(),
			MaxTime: ti.GetMaxTime(),
		})
	}
	return ri, nil
}

func (c *Client) legacyInfo(ctx context.Context) (RemoteInfo, error) {
	resp, err := c.store.Info(ctx, &storepb.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return RemoteInfo{}, fmt.Errorf("legacy store info: %w", err)
	}
	ri := RemoteInfo{Info: Info{
		ComponentType: legacyComponentType(resp.GetStoreType()),
		MinTime:       resp.GetMinTime(),
		MaxTime:       resp.GetMaxTime(),
	}}
	for _, ls := range resp.GetLabelSets() {
		if lset := LabelsFromProto(ls.GetLabels()); !lset.IsEmpty() {
			ri.LabelSets = append(ri.LabelSets, lset)
		}
	}
	if len(ri.LabelSets) == 0 && len(resp.GetLabels()) > 0 {
		ri.LabelSets = []labels.Labels{LabelsFromProto(resp.GetLabels())}
	}
	return ri, nil
}

func legacyComponentType(t storepb.StoreType) string {
	for c, st := range storeTypes {
		if st == t {
			return c
		}
	}
	return "unknown-store-api" // what Thanos calls an unknown component
}
