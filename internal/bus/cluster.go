package bus

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Route ports are drawn from below the Linux ephemeral range (32768-60999), so no
// connection's local port can take one between the check that it is free and the bind.
const (
	routePortMin      = 10000
	routePortMax      = 32000
	clusterStartTries = 5
	clusterFormWait   = 30 * time.Second
)

// ClusterOptions configure an in-process cluster on loopback, for tests and trials of
// node loss.
type ClusterOptions struct {
	// Dir holds one store directory per node; required.
	Dir string
	// Name of the cluster (default "blockflow"); nodes are <Name>-1 ... <Name>-<Size>.
	Name string
	// Size is the number of nodes (default 3).
	Size int
	// JetStreamDomain is shared by every node.
	JetStreamDomain string
	Log             zerolog.Logger
}

// Cluster is a set of in-process servers routed to each other.
type Cluster struct {
	Nodes []*Embedded
}

// StartCluster starts the nodes and waits until JetStream has a meta leader that sees
// every node.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.Dir == "" {
		return nil, errors.New("cluster: no store dir")
	}
	if o.Name == "" {
		o.Name = "blockflow"
	}
	if o.Size <= 0 {
		o.Size = 3
	}
	var last error
	for range clusterStartTries {
		ports, err := freeRoutePorts(o.Size)
		if err != nil {
			last = err
			continue
		}
		c, err := startCluster(o, ports)
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, fmt.Errorf("start cluster %s: %w", o.Name, last)
}

func startCluster(o ClusterOptions, ports []int) (*Cluster, error) {
	routes := make([]string, len(ports))
	for i, p := range ports {
		routes[i] = "nats-route://" + net.JoinHostPort(defaultEmbeddedHost, strconv.Itoa(p))
	}
	c := &Cluster{}
	for i, port := range ports {
		name := fmt.Sprintf("%s-%d", o.Name, i+1)
		e, err := StartEmbedded(EmbeddedOptions{
			StoreDir:        filepath.Join(o.Dir, name),
			ServerName:      name,
			JetStreamDomain: o.JetStreamDomain,
			Cluster:         &RouteOptions{Name: o.Name, Port: port, Routes: routes},
			Log:             o.Log,
		})
		if err != nil {
			c.Shutdown()
			return nil, err
		}
		c.Nodes = append(c.Nodes, e)
	}
	if err := c.waitFormed(clusterFormWait); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// freeRoutePorts picks n consecutive free ports at a random place in the route range.
func freeRoutePorts(n int) ([]int, error) {
	base := routePortMin + rand.IntN(routePortMax-routePortMin-n)
	ports := make([]int, n)
	for i := range ports {
		p := base + i
		l, err := net.Listen("tcp", net.JoinHostPort(defaultEmbeddedHost, strconv.Itoa(p)))
		if err != nil {
			return nil, fmt.Errorf("route port %d: %w", p, err)
		}
		_ = l.Close()
		ports[i] = p
	}
	return ports, nil
}

func (c *Cluster) waitFormed(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if n.srv.JetStreamIsLeader() && len(n.srv.JetStreamClusterPeers()) == len(c.Nodes) {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("no JetStream meta leader seeing all %d nodes after %s", len(c.Nodes), timeout)
}

// ClientURLs is every node's client URL, comma-separated, for Config.URL.
func (c *Cluster) ClientURLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Embedded {
	for _, n := range c.Nodes {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for _, n := range c.Nodes {
		n.Shutdown()
	}
}
