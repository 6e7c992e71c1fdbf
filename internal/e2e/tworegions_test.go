package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestTwoRegionsShareTheWork runs two regiond instances on one database
// and one NATS, as an installation that wants no single point of failure
// does. Both serve the same state; a rack going offline is declared once,
// not by each instance; and when one instance is killed, the other goes on
// ingesting rack events and watching heartbeats alone.
func TestTwoRegionsShareTheWork(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	addrA, addrB := freeAddr(t), freeAddr(t)
	regionA := start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", addrA)
	start(t, "regiond", "-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", addrB)
	tok := token(t, dbURL)
	a := api{t: t, base: "http://" + addrA, token: tok}
	b := api{t: t, base: "http://" + addrB, token: tok}

	rackProcs := map[string]*proc{}
	dirs := map[string]string{}
	startRack := func(name string) {
		if dirs[name] == "" {
			dirs[name] = filepath.Join(t.TempDir(), name)
		}
		rackProcs[name] = start(t, "rackd", "-insecure-nats", "-nats-url", ns.URL, "-data-dir", dirs[name], "-name", name,
			"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	}
	startRack("r1")
	startRack("r2")
	online := func(via api, want map[string]bool) func() error {
		return func() error {
			rs, err := racks(ctx, via.base, via.token)
			if err != nil {
				return err
			}
			got := map[string]bool{}
			for _, r := range rs {
				got[r.Name] = r.Online
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("via %s: online %v, want %v", via.base, got, want)
			}
			return nil
		}
	}
	both := map[string]bool{"r1": true, "r2": true}
	eventually(t, 15*time.Second, "both racks online through region A", online(a, both))
	eventually(t, 5*time.Second, "both racks online through region B", online(b, both))

	// What one instance writes, the other serves at once.
	var m struct{ ID string }
	if code := a.call("POST", "/api/v1/machines", nil, map[string]any{"hostname": "shared", "macs": []string{"52:54:00:ab:00:01"}}, &m); code != 201 {
		t.Fatalf("create machine through A: %d", code)
	}
	var got struct{ Hostname string }
	if code := b.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got); code != 200 || got.Hostname != "shared" {
		t.Fatalf("the machine through B: %d %+v", code, got)
	}

	offlineEvents := func(via api, rack string) int {
		rs, _ := racks(ctx, via.base, via.token)
		r, _ := rackByName(rs, rack)
		var page struct{ Events []struct{ Type string } }
		via.call("GET", "/api/v1/events?limit=1000&stream=rack/"+r.ID+"&type="+events.TypeRackOffline, nil, nil, &page)
		return len(page.Events)
	}

	// Both instances watch heartbeats; the rack's going is declared once.
	rackProcs["r2"].Kill()
	eventually(t, 10*time.Second, "r2 offline", online(b, map[string]bool{"r1": true, "r2": false}))
	// Give the slower instance its chance to declare it too.
	time.Sleep(3 * time.Second)
	if n := offlineEvents(a, "r2"); n != 1 {
		t.Fatalf("%d rack_offline events for r2 with two regions watching, want 1", n)
	}

	// Region A dies; B carries on alone: it ingests r2's return and
	// notices r1's going.
	regionA.Kill()
	startRack("r2")
	eventually(t, 15*time.Second, "r2 back, seen by the remaining region", online(b, both))
	rackProcs["r1"].Kill()
	eventually(t, 10*time.Second, "r1 offline, seen by the remaining region", online(b, map[string]bool{"r1": false, "r2": true}))
	if n := offlineEvents(b, "r1"); n != 1 {
		t.Fatalf("%d rack_offline events for r1, want 1", n)
	}
}
