package region_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/follower"
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
