package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack/capabilities"
)

// nodeRack returns the JS rack's directory (testdata/noderack) with its
// dependencies installed: `npm ci` runs there when node_modules is missing.
func nodeRack(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "noderack"))
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		t.Fatalf("the JS rack needs Node.js 18 or later with npm on PATH (Debian: apt-get install nodejs npm): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "nats", "package.json")); err == nil {
		return node, dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("%s has no node_modules and npm is not on PATH to install them (Debian: apt-get install npm): %v", dir, err)
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v (it needs the npm registry, or an npm cache holding nats 2.29.3)\n%s", dir, err, out)
	}
	return node, dir
}

// startNode runs the JS rack with env as its configuration.
func startNode(t *testing.T, node, dir string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(node, "rack.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, "noderack", cmd)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRackWrittenFromTheWireContract runs the rack in
// testdata/noderack/rack.mjs, written in JavaScript from docs/wire.md and
// schema/*.json alone, against a region on a NATS server whose rack user
// is exactly what `rackplane nats-permissions` prints. It checks what the
// author of such a rack would: the rack is online under its name and id,
// its OS is offered with its version, it answers live queries and rpc in
// the contract's reply envelope without the region seeing a divergence,
// nothing it sent was rejected, it never hit a permission, it goes offline
// when killed and comes back under the same id, and it stops cleanly on
// SIGTERM.
func TestRackWrittenFromTheWireContract(t *testing.T) {
	endToEnd(t)
	node, dir := nodeRack(t)
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "noderack")
	printID := func() string {
		cmd := exec.Command(node, "rack.mjs", "--print-id")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "DATA_DIR="+dataDir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("node rack.mjs --print-id: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	id := printID()
	if len(id) != 36 || printID() != id {
		t.Fatalf("rack id %q is not a stable UUID", id)
	}

	ns, withUser := permissionedNATS(t, output(t, "rackplane", "nats-permissions", "-user", "noderack", "-password", "noderack-pw", id))
	// The rack starts first: it keeps its events until the region has
	// made the streams.
	env := []string{"NATS_URL=" + withUser("noderack", "noderack-pw"), "DATA_DIR=" + dataDir, "RACK_NAME=js-rack", "HEARTBEAT_MS=500"}
	rack := startNode(t, node, dir, env...)
	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", withUser("region", "region-pw"), "-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	online := func(want bool) func() error {
		return func() error {
			rs, err := racks(ctx, a.base, a.token)
			if err != nil {
				return err
			}
			r, ok := rackByName(rs, "js-rack")
			if !ok || r.ID != id || r.Online != want || len(rs) != 1 {
				return fmt.Errorf("want js-rack %s online=%v, racks %+v", id, want, rs)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "the JS rack online under its name and id", online(true))

	// Its OS, with exactly that rack and version, in the registry.
	type osList struct {
		OSes []struct {
			OS, Release, Arch, Subarch string
			Racks                      []struct {
				ID       string
				Versions []struct{ ID, Label, Version string }
			}
		}
		Answered    []struct{ ID string }
		NotAnswered []struct{ ID string } `json:"not_answered"`
	}
	checkOS := func(l osList) error {
		if len(l.OSes) != 1 {
			return fmt.Errorf("want one OS, got %+v", l.OSes)
		}
		o := l.OSes[0]
		if o.OS != "noderackos" || o.Release != "one" || o.Arch != "amd64" || o.Subarch != "generic" ||
			len(o.Racks) != 1 || o.Racks[0].ID != id || len(o.Racks[0].Versions) != 1 ||
			o.Racks[0].Versions[0].Version != "20261123.1" || o.Racks[0].Versions[0].Label != "stable" {
			return fmt.Errorf("want noderackos/one/amd64/generic on %s with version stable/20261123.1, got %+v", id, o)
		}
		return nil
	}
	eventually(t, 15*time.Second, "the JS rack's OS in GET /api/v1/os", func() error {
		var l osList
		if code := a.call("GET", "/api/v1/os", nil, nil, &l); code != 200 {
			return fmt.Errorf("GET /api/v1/os: %d", code)
		}
		return checkOS(l)
	})

	// A live query: the rack answers, with what it reported.
	var live osList
	if code := a.call("GET", "/api/v1/os?live=true&timeout=5s", nil, nil, &live); code != 200 {
		t.Fatalf("live query: %d", code)
	}
	if len(live.NotAnswered) != 0 || len(live.Answered) != 1 || live.Answered[0].ID != id {
		t.Fatalf("live query: answered %+v, not answered %+v", live.Answered, live.NotAnswered)
	}
	if err := checkOS(live); err != nil {
		t.Fatalf("live query: %v", err)
	}

	// rpc as the contract says: the reply envelope, from the rack, on its
	// own subject.
	nc, err := nats.Connect(withUser("region", "region-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, subject := range []string{"rackplane.rack." + id + ".rpc.info", "rackplane.rack." + id + ".rpc.capabilities"} {
		msg, err := nc.Request(subject, []byte(`{}`), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		var reply struct {
			From   string
			Result map[string]any
			Error  any
		}
		if err := json.Unmarshal(msg.Data, &reply); err != nil || reply.From != id || reply.Error != nil || reply.Result == nil {
			t.Fatalf("%s: reply %s (%v)", subject, msg.Data, err)
		}
		if strings.HasSuffix(subject, ".info") {
			// The fields docs/wire.md lists for info.
			for _, k := range []string{"version", "started_at", "http", "buffered_events", "dropped_events"} {
				if _, ok := reply.Result[k]; !ok {
					t.Errorf("%s: no %s in %v", subject, k, reply.Result)
				}
			}
			if reply.Result["id"] != id || reply.Result["name"] != "js-rack" {
				t.Fatalf("%s: result %v", subject, reply.Result)
			}
		}
	}

	// The digest it sent is the one rackd computes for the same content:
	// both follow the canonical form of capabilities.v1.json.
	msg, err := nc.Request("rackplane.rack."+id+".rpc.capabilities", []byte(`{}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var capReply struct{ Result json.RawMessage }
	var caps events.Capabilities
	if err := json.Unmarshal(msg.Data, &capReply); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(capReply.Result, &caps); err != nil {
		t.Fatalf("capabilities %s: %v", capReply.Result, err)
	}
	if want := capabilities.Digest(caps); caps.Digest != want {
		canon, _ := capabilities.Canonical(capReply.Result)
		t.Errorf("the JS rack's digest %s is not rackd's %s for the same content (canonical JSON %s)", caps.Digest, want, canon)
	}

	// Its events are in the log with UUIDv7 ids, on JetStream with the id
	// as Nats-Msg-Id.
	type eventList struct {
		Events []struct{ ID, Type, Source string }
	}
	rackEvents := func() (seen map[string]int) {
		var evs eventList
		if code := a.call("GET", "/api/v1/events?limit=1000&stream=rack/"+id, nil, nil, &evs); code != 200 {
			t.Fatalf("GET /api/v1/events: %d", code)
		}
		seen = map[string]int{}
		for _, e := range evs.Events {
			seen[e.Type]++
			if e.Source != "rackplane/rack/"+id {
				seen[e.Type] = 0 // rack events only
				continue
			}
			if len(e.ID) != 36 || e.ID[14] != '7' || !strings.ContainsRune("89ab", rune(e.ID[19])) {
				t.Errorf("event %s %s: id is not a UUIDv7", e.Type, e.ID)
			}
		}
		return seen
	}
	seen := rackEvents()
	for _, typ := range []string{"rackplane.rack.rack_registered.v1", "rackplane.rack.capabilities_reported.v1"} {
		if seen[typ] == 0 {
			t.Errorf("no %s in the rack's stream: %v", typ, seen)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "RACKPLANE_RACK_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, "rackplane.rack."+id+".event.rack_registered")
	if err != nil {
		t.Fatalf("the rack's rack_registered on JetStream: %v", err)
	}
	var env1 struct{ ID string }
	if err := json.Unmarshal(last.Data, &env1); err != nil || last.Header.Get("Nats-Msg-Id") != env1.ID {
		t.Errorf("rack_registered on JetStream: Nats-Msg-Id %q, event id %q (%v)", last.Header.Get("Nats-Msg-Id"), env1.ID, err)
	}

	// The region saw no divergence, rejected nothing it sent and refused
	// none of its heartbeats.
	var evs eventList
	checkClean := func() {
		t.Helper()
		evs.Events = nil
		a.call("GET", "/api/v1/events?limit=1000&type=rackplane.region.capabilities_diverged.v1", nil, nil, &evs)
		if len(evs.Events) != 0 {
			t.Errorf("the region recorded a capabilities divergence: %+v", evs.Events)
		}
		var rej struct {
			Rejected []map[string]any `json:"rejected_events"`
		}
		if code := a.call("GET", "/api/v1/rejected-events", nil, nil, &rej); code != 200 {
			t.Fatalf("GET /api/v1/rejected-events: %d", code)
		}
		if len(rej.Rejected) != 0 {
			t.Errorf("the region rejected messages: %+v", rej.Rejected)
		}
		resp, err := http.Get(a.base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(metrics), "\nrackplane_region_heartbeats_rejected_total 0\n") {
			t.Errorf("the region refused heartbeats (they are not in rejected-events): %s", grepLines(string(metrics), "heartbeats"))
		}
	}
	checkClean()

	// NATS goes away and comes back: the rack registers again.
	registered := seen["rackplane.rack.rack_registered.v1"]
	ns.Restart()
	eventually(t, 20*time.Second, "rack_registered again after NATS came back", func() error {
		if n := rackEvents()["rackplane.rack.rack_registered.v1"]; n <= registered {
			return fmt.Errorf("%d rack_registered, %d before the restart", n, registered)
		}
		return nil
	})
	eventually(t, 15*time.Second, "the JS rack online after NATS came back", online(true))

	// SIGKILL: offline. Restarted on the same data dir: online, same id.
	first := rack
	first.Kill()
	eventually(t, 15*time.Second, "the killed JS rack offline", online(false))
	rack = startNode(t, node, dir, env...)
	eventually(t, 15*time.Second, "the restarted JS rack online under the same id", online(true))
	if code := a.call("GET", "/api/v1/os?live=true&timeout=5s", nil, nil, &live); code != 200 || len(live.NotAnswered) != 0 {
		t.Fatalf("live query after the restart: %d, not answered %+v", code, live.NotAnswered)
	}
	checkClean()

	// SIGTERM: a clean exit.
	_ = rack.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rack.done:
		if rack.err != nil {
			t.Errorf("the JS rack's exit on SIGTERM: %v", rack.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the JS rack did not stop within 10s of SIGTERM")
	}
	for _, p := range []*proc{first, rack} {
		if out := strings.ToLower(p.Output()); strings.Contains(out, "permissions violation") || strings.Contains(out, "authorization violation") {
			t.Errorf("the JS rack hit a NATS refusal:\n%s", tail(p.Output(), 30))
		}
	}
}
