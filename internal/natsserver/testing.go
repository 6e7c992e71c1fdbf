package natsserver

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Test is an embedded server owned by one test, which can stop it and start
// it again on the same port and store.
type Test struct {
	t      testing.TB
	cfg    Config
	Server *server.Server
	URL    string
}

// StartTest starts a server for t on a free port, stopped at cleanup.
func StartTest(t testing.TB) *Test {
	t.Helper()
	return StartTestConfig(t, "")
}

// StartTestConfig is StartTest with a server configuration file, such as
// one with an authorization section.
func StartTestConfig(t testing.TB, configFile string) *Test {
	t.Helper()
	return startTest(t, Config{Port: -1, StoreDir: t.TempDir(), ConfigFile: configFile})
}

// StartTestAuth is StartTest with the server secured for the region's
// auth callout by auth (see Auth): only the region's users get in without
// the callout.
func StartTestAuth(t testing.TB, auth Auth) *Test {
	t.Helper()
	return startTest(t, Config{Port: -1, StoreDir: t.TempDir(), Auth: &auth})
}

func startTest(t testing.TB, cfg Config) *Test {
	t.Helper()
	ts := &Test{t: t, cfg: cfg}
	ts.start()
	// Pin the port so Restart comes back where clients reconnect.
	ts.cfg.Port = ts.Server.Addr().(*net.TCPAddr).Port
	t.Cleanup(ts.Stop)
	return ts
}

func (ts *Test) start() {
	s, err := Start(ts.cfg)
	if err != nil {
		ts.t.Fatalf("start nats: %v", err)
	}
	ts.Server = s
	ts.URL = s.ClientURL()
}

// Stop shuts the server down (idempotent).
func (ts *Test) Stop() {
	if ts.Server != nil {
		ts.Server.Shutdown()
		ts.Server.WaitForShutdown()
	}
}

// Restart stops the server and starts it again on the same port and store.
func (ts *Test) Restart() {
	ts.Stop()
	ts.start()
}

// Connect returns a client connection that retries forever, closed at cleanup.
func (ts *Test) Connect() *nats.Conn {
	ts.t.Helper()
	nc, err := nats.Connect(ts.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		ts.t.Fatalf("connect nats: %v", err)
	}
	ts.t.Cleanup(nc.Close)
	return nc
}

// ConnectNKey is Connect as the nkey user kp, as the region connects to
// a secured server.
func (ts *Test) ConnectNKey(kp nkeys.KeyPair) *nats.Conn {
	ts.t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		ts.t.Fatal(err)
	}
	nc, err := nats.Connect(ts.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Nkey(pub, kp.Sign))
	if err != nil {
		ts.t.Fatalf("connect nats as %s: %v", pub, err)
	}
	ts.t.Cleanup(nc.Close)
	return nc
}

// Reload makes the server take up its configuration file again.
func (ts *Test) Reload() {
	ts.t.Helper()
	if err := Reload(ts.Server, ts.cfg); err != nil {
		ts.t.Fatal(err)
	}
}

// Cluster is an embedded JetStream cluster owned by one test: every node
// on loopback with its own store, each of which can be stopped and
// started again.
type Cluster struct {
	t     testing.TB
	Nodes []*Test
}

// StartCluster starts a JetStream cluster of n nodes for t, stopped at
// cleanup, and waits until every node sees the others and the cluster
// has a metadata leader that sees them all: streams of up to n replicas
// can be created on return.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	clusterPorts := FreePorts(t, n)
	var routes []string
	for _, p := range clusterPorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &Cluster{t: t}
	for i := range n {
		ts := &Test{t: t, cfg: Config{
			Port: -1, StoreDir: t.TempDir(), Name: fmt.Sprintf("n%d", i+1),
			Cluster: &ClusterConfig{Name: "rackplane", Port: clusterPorts[i], Routes: routes},
		}}
		ts.start()
		ts.cfg.Port = ts.Server.Addr().(*net.TCPAddr).Port
		t.Cleanup(ts.Stop)
		c.Nodes = append(c.Nodes, ts)
	}
	c.WaitFormed()
	return c
}

// URLs is every node's client URL, comma separated, as clients take it.
func (c *Cluster) URLs() string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL)
	}
	return strings.Join(urls, ",")
}

// WaitFormed waits until one node leads the cluster's metadata and sees
// every node up, and every node is current with it.
func (c *Cluster) WaitFormed() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.formed()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("nats cluster not formed after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) formed() error {
	leaders := 0
	for _, n := range c.Nodes {
		s := n.Server
		if s == nil || !s.Running() {
			return fmt.Errorf("node %s is stopped", n.cfg.Name)
		}
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("node %s is not current with the metadata leader", n.cfg.Name)
		}
		if !s.JetStreamIsLeader() {
			continue
		}
		leaders++
		// Only the leader knows which peers are up.
		if got := len(s.JetStreamClusterPeers()); got != len(c.Nodes) {
			return fmt.Errorf("the metadata leader %s sees %d JetStream peers up, want %d", n.cfg.Name, got, len(c.Nodes))
		}
	}
	if leaders != 1 {
		return fmt.Errorf("%d metadata leaders", leaders)
	}
	return nil
}

// Connect returns a client connection to every node that retries
// forever, closed at cleanup.
func (c *Cluster) Connect() *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		c.t.Fatalf("connect nats cluster: %v", err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// FreePorts returns n TCP ports free on loopback right now, for servers
// whose ports must be known before they start (cluster routes).
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
