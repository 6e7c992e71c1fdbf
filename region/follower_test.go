package region_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/postgres"
)

func TestUnknownMACIsDiscovered(t *testing.T) {
	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	h.eventually(5*time.Second, "rack online", func() error {
		if got, _ := h.rack(r.ID()); !got.Online {
			return fmt.Errorf("offline")
		}
		return nil
	})
	// An unknown machine PXE-boots: its firmware asks for its config.
	resp, err := http.Get("http://" + r.HTTPAddr() + "/pxelinux.cfg/01-52-54-00-bb-00-01")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var list struct {
		Machines []struct {
			ID, Hostname, Status, Origin string
			BootRackID                   string `json:"boot_rack_id"`
		}
	}
	h.eventually(10*time.Second, "machine discovered", func() error {
		h.getJSON("/api/v1/machines?mac=52:54:00:bb:00:01", &list)
		if len(list.Machines) != 1 {
			return fmt.Errorf("machines %+v", list)
		}
		return nil
	})
	m := list.Machines[0]
	if m.Status != "new" || m.Origin != "discovered" || m.BootRackID != r.ID() || m.Hostname != "node-525400bb0001" {
		t.Fatalf("discovered machine: %+v", m)
	}
	// It boots again: still one machine, once the follower has seen it.
	resp, err = http.Get("http://" + r.HTTPAddr() + "/pxelinux.cfg/01-52-54-00-bb-00-01")
	if err == nil {
		resp.Body.Close()
	}
	h.followerHandled(events.TypeBootHandoff, 2)
	h.getJSON("/api/v1/machines", &list)
	if len(list.Machines) != 1 {
		t.Fatalf("machines after a second boot: %+v", list.Machines)
	}
}

// followerHandled waits until n events of type typ are in the log and the
// region's follower has read past the last of them.
func (h *harness) followerHandled(typ string, n int) {
	h.t.Helper()
	ctx := context.Background()
	db := postgres.New(h.pool, testLogger())
	var last postgres.Cursor
	h.eventually(10*time.Second, fmt.Sprintf("%d %s events in the log", n, typ), func() error {
		evs, _, err := db.ReadEvents(ctx, postgres.Cursor{}, 1000, postgres.ReadFilter{Types: []string{typ}})
		if err != nil {
			return err
		}
		if len(evs) < n {
			return fmt.Errorf("%d of them", len(evs))
		}
		last = evs[len(evs)-1].Cursor
		return nil
	})
	h.eventually(10*time.Second, "the follower past them", func() error {
		c, err := db.LoadCursor(ctx, follower.Name)
		if err != nil {
			return err
		}
		if c.TxID < last.TxID || c.TxID == last.TxID && c.Position < last.Position {
			return fmt.Errorf("the follower is at %s, the last event at %s", c, last)
		}
		return nil
	})
}

func TestRackShippedPreseeds(t *testing.T) {
	h := startRegion(t)
	preseeds := t.TempDir()
	file := filepath.Join(preseeds, "ubuntu-default.preseed")
	os.WriteFile(file, []byte("# rackplane-scope: os=ubuntu\n#cloud-config\nhostname: {{.Machine.Hostname}}\n"), 0o644)
	cfg := rackConfig(h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	cfg.PreseedDir = preseeds
	r, _ := startRackConfig(t, h, cfg)

	type preseedOut struct {
		Preseed struct {
			Scope          struct{ Kind, OS string }
			CurrentVersion int64 `json:"current_version"`
			LatestVersion  int64 `json:"latest_version"`
		}
		Version struct {
			Version         int64
			Origin, Content string
		}
	}
	var p preseedOut
	h.eventually(10*time.Second, "rack's preseed stored", func() error {
		if code := h.getJSON("/api/v1/preseeds/ubuntu-default", &p); code != 200 {
			return fmt.Errorf("%d", code)
		}
		return nil
	})
	if p.Version.Origin != "rack:"+r.ID() || p.Preseed.Scope.Kind != "os" || p.Preseed.Scope.OS != "ubuntu" || p.Preseed.CurrentVersion != 1 {
		t.Fatalf("stored: %+v", p)
	}
	// An operator edits it: version 2, current.
	if code, body, _ := h.raw("PUT", h.api+"/api/v1/preseeds/ubuntu-default", map[string]string{"If-Match": `"1"`},
		`{"content": "#cloud-config\nhostname: {{.Machine.Hostname}}\n# site tweak\n"}`); code != 200 {
		t.Fatalf("operator edit: %d %s", code, body)
	}
	// The rack ships a new default: stored as version 3, but the
	// operator's version stays current.
	os.WriteFile(file, []byte("# rackplane-scope: os=ubuntu\n#cloud-config\nhostname: {{.Machine.Hostname}}\n# new default\n"), 0o644)
	r.Capabilities().Changed()
	h.eventually(10*time.Second, "rack's new default stored", func() error {
		h.getJSON("/api/v1/preseeds/ubuntu-default", &p)
		if p.Preseed.LatestVersion != 3 {
			return fmt.Errorf("%+v", p.Preseed)
		}
		return nil
	})
	if p.Preseed.CurrentVersion != 2 || !strings.Contains(p.Version.Content, "site tweak") {
		t.Fatalf("the rack's default overwrote the operator's edit: %+v", p)
	}
	var v3 struct{ Origin, Content string }
	h.getJSON("/api/v1/preseeds/ubuntu-default/versions/3", &v3)
	if v3.Origin != "rack:"+r.ID() || !strings.Contains(v3.Content, "new default") {
		t.Fatalf("version 3: %+v", v3)
	}
}

// TestStrangersDoNotStallTheRegion holds a transaction id open in another
// database of the same PostgreSQL server, and a transaction of the
// region's own database that appends nothing, for the whole test, as a
// long batch job or migration would. Meanwhile the region keeps going: a
// machine created through the API is listed and its event is in the log
// at once (no settle timeout), a reader waiting at the end of the log is
// woken by it, and an unknown MAC's boot becomes a machine.
func TestStrangersDoNotStallTheRegion(t *testing.T) {
	h := startRegion(t)
	ctx := context.Background()
	for _, url := range []string{pgtest.NewDatabase(t), h.dbURL} {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	h.eventually(10*time.Second, "rack online", func() error {
		if got, _ := h.rack(r.ID()); !got.Online {
			return fmt.Errorf("offline")
		}
		return nil
	})

	var end eventsPage
	h.getJSON("/api/v1/events?last=1", &end)
	waiting := make(chan eventsPage, 1)
	go func() {
		var p eventsPage
		h.getJSON("/api/v1/events?after="+end.Next+"&wait=30s&type="+events.TypeMachineCreated, &p)
		waiting <- p
	}()
	m := h.newMachine("beside-a-batch-job", "52:54:00:bb:00:21")
	var list struct{ Machines []struct{ ID string } }
	if h.getJSON("/api/v1/machines?mac=52:54:00:bb:00:21", &list); len(list.Machines) != 1 || list.Machines[0].ID != m.ID {
		t.Fatalf("the machine just created is not listed: %+v", list)
	}
	var tail eventsPage
	h.getJSON("/api/v1/events?last=1&type="+events.TypeMachineCreated, &tail)
	if len(tail.Events) != 1 || tail.Events[0].Subject != "machine/"+m.ID {
		t.Fatalf("the log's newest machine_created is not the machine just created: %+v", tail)
	}
	select {
	case p := <-waiting:
		if len(p.Events) != 1 || p.Events[0].Subject != "machine/"+m.ID {
			t.Fatalf("the waiting reader got %+v", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader waiting at the end of the log was not woken by the new machine")
	}
	if n := h.metric("rackplane_region_event_log_settle_timeouts_total"); n != 0 { // -1: missing
		t.Errorf("%v API reads stopped waiting for the log beside strangers", n)
	}

	// An unknown machine PXE-boots: the follower makes it a machine.
	resp, err := http.Get("http://" + r.HTTPAddr() + "/pxelinux.cfg/01-52-54-00-bb-00-22")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	h.eventually(10*time.Second, "the booting MAC discovered beside strangers", func() error {
		h.getJSON("/api/v1/machines?mac=52:54:00:bb:00:22", &list)
		if len(list.Machines) != 1 {
			return fmt.Errorf("machines %+v", list)
		}
		return nil
	})
}

// metric reads an unlabelled metric from the region's /metrics, as a
// Prometheus server would; -1 when it is not there.
func (h *harness) metric(name string) float64 {
	h.t.Helper()
	resp, err := http.Get(h.api + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				h.t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	return -1
}

// TestStreamsAndConsumersDeletedFromOutside: a NATS client with rights on
// JetStream deletes the region's ingest consumer and both event streams.
// The region does not stop: it makes them again, and a machine booting
// afterwards is discovered as before.
func TestStreamsAndConsumersDeletedFromOutside(t *testing.T) {
	h := startRegion(t)
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	h.eventually(5*time.Second, "rack online", func() error {
		if got, _ := h.rack(r.ID()); !got.Online {
			return fmt.Errorf("offline")
		}
		return nil
	})
	ctx := context.Background()
	if err := h.js.DeleteConsumer(ctx, events.RackStream, ingest.ConsumerName); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{events.RackStream, events.RegionStream} {
		if err := h.js.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	h.eventually(20*time.Second, "both streams made again", func() error {
		for _, s := range []string{events.RackStream, events.RegionStream} {
			if _, err := h.js.Stream(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	})
	var list struct{ Machines []struct{ ID string } }
	h.eventually(30*time.Second, "a machine booting after the deletions discovered", func() error {
		resp, err := http.Get("http://" + r.HTTPAddr() + "/pxelinux.cfg/01-52-54-00-bb-00-31")
		if err != nil {
			return err
		}
		resp.Body.Close()
		h.getJSON("/api/v1/machines?mac=52:54:00:bb:00:31", &list)
		if len(list.Machines) != 1 {
			return fmt.Errorf("machines %+v", list)
		}
		return nil
	})
}
