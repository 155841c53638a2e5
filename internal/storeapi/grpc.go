package storeapi

import (
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	// Registers the "snappy" compressor that Thanos Queriers may use.
	_ "github.com/blockflow/blockflow/internal/storeapi/snappy"
)

// NewGRPCServer returns a gRPC server set up as Thanos's: keepalive pings from clients
// every 10s are allowed (Queriers send them; gRPC's default policy answers GOAWAY), and
// messages of any size are accepted and sent. opts are applied after these.
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	base := []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(math.MaxInt32),
		grpc.MaxSendMsgSize(math.MaxInt32),
	}
	return grpc.NewServer(append(base, opts...)...)
}

// clientDialOptions are those of the Thanos Querier: keepalive pings every 10s, any
// message size, plaintext unless the caller adds transport credentials.
func clientDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	}
}
