package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/ingest"
)

// natsNode is one nats-server process of a cluster, which the test can
// kill with SIGKILL and start again on the same ports and store.
type natsNode struct {
	t       *testing.T
	name    string
	conf    string
	url     string
	monitor string
	proc    *proc
}

func (n *natsNode) start() {
	n.proc = startCmd(n.t, n.name, exec.Command(filepath.Join(binDir, "nats-server"), "-c", n.conf))
	eventually(n.t, 20*time.Second, n.name+" ready", func() error {
		if !strings.Contains(n.proc.Output(), "Server is ready") {
			return fmt.Errorf("not ready")
		}
		return nil
	})
}

// jsz is the node's JetStream report, with its streams.
func (n *natsNode) jsz() (*server.JSInfo, error) {
	resp, err := http.Get(n.monitor + "/jsz?streams=true")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info server.JSInfo
	return &info, json.NewDecoder(resp.Body).Decode(&info)
}

// stream is the node's own copy of a stream, as the node reports it.
func (n *natsNode) stream(name string) (server.StreamState, error) {
	info, err := n.jsz()
	if err != nil {
		return server.StreamState{}, err
	}
	for _, a := range info.AccountDetails {
		for _, s := range a.Streams {
			if s.Name == name {
				return s.State, nil
			}
		}
	}
	return server.StreamState{}, fmt.Errorf("%s holds no stream %s", n.name, name)
}

// startNATSCluster starts three nats-server processes clustered on
// loopback, each with JetStream and its own store, and waits until all
// three agree on a metadata leader.
func startNATSCluster(t *testing.T) []*natsNode {
	t.Helper()
	ports := natsserver.FreePorts(t, 9)
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[6+i]))
	}
	var nodes []*natsNode
	for i := range 3 {
		dir := t.TempDir()
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, "nats.conf")
		text := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 8MB
jetstream { store_dir: %q }
cluster {
  name: rackplane
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, ports[i], ports[3+i], filepath.Join(dir, "store"), ports[6+i], strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		n := &natsNode{t: t, name: name, conf: conf,
			url: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), monitor: fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])}
		n.start()
		nodes = append(nodes, n)
	}
	eventually(t, 30*time.Second, "the NATS cluster formed", func() error {
		var leader string
		for _, n := range nodes {
			info, err := n.jsz()
			if err != nil {
				return err
			}
			if info.Meta == nil || info.Meta.Leader == "" || info.Meta.Size != 3 {
				return fmt.Errorf("%s: meta cluster %+v", n.name, info.Meta)
			}
			if leader != "" && info.Meta.Leader != leader {
				return fmt.Errorf("leaders %s and %s", leader, info.Meta.Leader)
			}
			leader = info.Meta.Leader
		}
		return nil
	})
	return nodes
}

// TestNATSNodeKilledWhileRacksPublish runs regiond with its streams at
// three replicas on a three-node NATS cluster, and ten rackd processes
// connected to all three nodes. While every rack reports boot requests
// (one event each), the node leading the rack event stream is killed
// with SIGKILL: every event reaches the region's log exactly once. Started
// again, the node catches up: its copy of the stream matches the
// leader's.
func TestNATSNodeKilledWhileRacksPublish(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	nodes := startNATSCluster(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.url)
	}
	natsURL := strings.Join(urls, ",")
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	start(t, "regiond", "-no-nats-callout", "-nats-url", natsURL, "-nats-stream-replicas", "3", "-database-url", dbURL, "-http-addr", freeAddr(t))

	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streamInfo := func(name string) (*jetstream.StreamInfo, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := js.Stream(cctx, name)
		if err != nil {
			return nil, err
		}
		return st.CachedInfo(), nil
	}
	for _, name := range []string{events.RackStream, events.RegionStream} {
		eventually(t, 30*time.Second, name+" on three servers", func() error {
			si, err := streamInfo(name)
			if err != nil {
				return err
			}
			if si.Config.Replicas != 3 || si.Cluster == nil || si.Cluster.Leader == "" || len(si.Cluster.Replicas) != 2 {
				return fmt.Errorf("replicas %d, cluster %+v", si.Config.Replicas, si.Cluster)
			}
			return nil
		})
	}
	eventually(t, 30*time.Second, "the region's rack event consumer on three servers", func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := js.Consumer(cctx, events.RackStream, ingest.ConsumerName)
		if err != nil {
			return err
		}
		if ci := c.CachedInfo(); ci.Cluster == nil || ci.Cluster.Leader == "" || len(ci.Cluster.Replicas) != 2 {
			return fmt.Errorf("cluster %+v", ci.Cluster)
		}
		return nil
	})

	const racks, perRack = 10, 150
	var rackHTTP []string
	for i := range racks {
		addr := freeAddr(t)
		rackHTTP = append(rackHTTP, addr)
		name := fmt.Sprintf("r%d", i)
		start(t, "rackd", append([]string{"-insecure-nats", "-nats-url", natsURL, "-data-dir", filepath.Join(t.TempDir(), name), "-name", name,
			"-http-addr", addr, "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false"}, everyBootEvent...)...)
	}
	count := func(q string, args ...any) int {
		var n int
		if err := pool.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Logf("count: %v", err)
		}
		return n
	}
	eventually(t, 60*time.Second, "every rack registered", func() error {
		if n := count(`SELECT count(DISTINCT source) FROM events WHERE type = $1`, events.TypeRackRegistered); n != racks {
			return fmt.Errorf("%d racks registered", n)
		}
		return nil
	})

	// Each POST is refused (boot files are fetched with GET) and reported
	// as one boot_request_rejected event naming the path.
	loaded := func() int {
		return count(`SELECT count(*) FROM events WHERE type = $1 AND data->>'detail' LIKE 'POST /load/%'`, events.TypeBootRequestRejected)
	}
	var g errgroup.Group
	var mu sync.Mutex
	sent := 0
	for i, addr := range rackHTTP {
		g.Go(func() error {
			for j := range perRack {
				resp, err := http.Post(fmt.Sprintf("http://%s/load/%d/%d", addr, i, j), "text/plain", nil)
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusMethodNotAllowed {
					return fmt.Errorf("rack %d: POST: %s", i, resp.Status)
				}
				mu.Lock()
				sent++
				mu.Unlock()
				time.Sleep(10 * time.Millisecond) // a steady stream, not one burst
			}
			return nil
		})
	}
	eventually(t, 60*time.Second, "a third of the events in the log", func() error {
		if n := loaded(); n < racks*perRack/3 {
			return fmt.Errorf("%d events in the log", n)
		}
		return nil
	})
	si, err := streamInfo(events.RackStream)
	if err != nil {
		t.Fatal(err)
	}
	var victim *natsNode
	for _, n := range nodes {
		if n.name == si.Cluster.Leader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("the rack stream's leader %q is none of the nodes", si.Cluster.Leader)
	}
	victim.proc.Kill()
	mu.Lock()
	t.Logf("killed %s, the rack stream's leader, with %d of %d events sent and %d in the log", victim.name, sent, racks*perRack, loaded())
	mu.Unlock()

	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "every event in the log", func() error {
		if n := loaded(); n != racks*perRack {
			return fmt.Errorf("%d events in the log, want %d", n, racks*perRack)
		}
		return nil
	})
	rows, err := pool.Query(ctx, `SELECT data->>'detail', count(*), count(DISTINCT id) FROM events
		WHERE type = $1 AND data->>'detail' LIKE 'POST /load/%' GROUP BY 1`, events.TypeBootRequestRejected)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var detail string
		var n, ids int
		if err := rows.Scan(&detail, &n, &ids); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s: %d events (%d ids), want 1", detail, n, ids)
		}
		seen[detail] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for i := range racks {
		for j := range perRack {
			if d := fmt.Sprintf("POST /load/%d/%d", i, j); !seen[d] {
				t.Errorf("no event for %s", d)
			}
		}
	}

	victim.start()
	eventually(t, time.Minute, victim.name+" caught up with the rack stream", func() error {
		si, err := streamInfo(events.RackStream)
		if err != nil {
			return err
		}
		own, err := victim.stream(events.RackStream)
		if err != nil {
			return err
		}
		if own.Msgs != si.State.Msgs || own.LastSeq != si.State.LastSeq || own.FirstSeq != si.State.FirstSeq {
			return fmt.Errorf("%s holds %d messages (%d to %d), the leader %s %d (%d to %d)", victim.name,
				own.Msgs, own.FirstSeq, own.LastSeq, si.Cluster.Leader, si.State.Msgs, si.State.FirstSeq, si.State.LastSeq)
		}
		for _, p := range si.Cluster.Replicas {
			if p.Name == victim.name && !p.Current {
				return fmt.Errorf("the leader does not yet count %s current", victim.name)
			}
		}
		return nil
	})
	t.Logf("%d events in the log, each once; %s holds the rack stream as the leader does", loaded(), victim.name)
}

// TestStreamReplicasNeedACluster: regiond asked for three replicas on a
// NATS server that is not clustered stops with a message saying so.
func TestStreamReplicasNeedACluster(t *testing.T) {
	endToEnd(t)
	ns := natsserver.StartTest(t)
	p := start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-nats-stream-replicas", "3", "-database-url", pgtest.NewDatabase(t), "-http-addr", freeAddr(t))
	exitsSaying(t, p, "-nats-stream-replicas 3: stream replicas 3: the NATS server")
}
