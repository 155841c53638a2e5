package bus

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/blockflow/blockflow/schemas"
)

// An R3 stream keeps taking events when the node leading it goes away.
func TestClusterSurvivesStreamLeaderLoss(t *testing.T) {
	t.Parallel()
	c, err := StartCluster(ClusterOptions{Dir: t.TempDir(), Log: testLogger(t, zerolog.ErrorLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	b := connect(t, Config{URL: c.ClientURLs(), Replicas: 3})
	publishReady(t, b, readyEvent("eu1"))

	ctx := testContext(t)
	s, err := b.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil {
		t.Fatalf("EVENTS has %d replicas, cluster %+v", info.Config.Replicas, info.Cluster)
	}
	leader := c.Node(info.Cluster.Leader)
	if leader == nil {
		t.Fatalf("stream leader %q is not a node", info.Cluster.Leader)
	}
	leader.Shutdown()

	// PublishBlockEvent retries through the election and the client's reconnect.
	publishReady(t, b, readyEvent("eu1"))
	waitFor(t, "two events in EVENTS", func() bool {
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 2
	})
}

// An edge server with its own JetStream domain reaches the hub's streams through its leaf
// connection when the client names the hub's domain.
func TestLeafNodeReachesHubDomain(t *testing.T) {
	t.Parallel()
	hub := startServer(t, EmbeddedOptions{ServerName: "hub", JetStreamDomain: "hub", LeafListen: &ListenOptions{}})
	edge := startServer(t, EmbeddedOptions{ServerName: "edge", JetStreamDomain: "edge", LeafRemotes: []string{hub.LeafURL()}})
	waitFor(t, "the leaf connection", func() bool { return hub.srv.NumLeafNodes() > 0 })

	atEdge := connect(t, Config{URL: edge.ClientURL(), Domain: "hub"})
	ev := readyEvent("edge1")
	publishReady(t, atEdge, ev)

	// The event is in the hub's stream, and a stage at the edge can take it from there.
	atHub := connect(t, Config{URL: hub.ClientURL()})
	ctx := testContext(t)
	s, err := atHub.js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("hub EVENTS: %+v, %v; want 1 message", info, err)
	}
	var c calls
	runStage(t, atEdge, uploadSpec(atEdge), func(_ context.Context, ev schemas.BlockReady) error {
		c.add(ev.ULID)
		return nil
	})
	waitFor(t, "the event handled at the edge", func() bool { return c.of(ev.ULID) == 1 })
	waitPending(t, atHub, "upload", 0)
}

func TestStartEmbeddedReportsBusyPort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Port: l.Addr().(*net.TCPAddr).Port})
	if err == nil {
		e.Shutdown()
		t.Fatal("started on a port in use")
	}
	if !strings.Contains(err.Error(), "listen") {
		t.Errorf("error %q does not say what failed", err)
	}
}
