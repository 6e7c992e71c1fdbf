package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region"
)

// failedMachine is a machine that failed its commissioning: a status a
// release is allowed in, reached through the API alone.
func (h *harness) failedMachine(rackID, hostname, mac string) machineOut {
	h.t.Helper()
	m := h.newMachine(hostname, mac)
	n := h.followerCount(events.TypeAgentFinished)
	h.agentFinished(rackID, m, h.commission(m), false, "test", n+1)
	h.waitStatus(m.ID, "failed", 10*time.Second)
	return m
}

// followerCount is how many events of typ the follower has handled.
func (h *harness) followerCount(typ string) int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = $1`, typ).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// releaseErase releases m with body and returns the operation the erase
// started: its machine_erasing event, which the machine shows as its
// deployment_id.
func (h *harness) releaseErase(m machineOut, body string) string {
	h.t.Helper()
	code, out, _ := h.raw("POST", h.api+"/api/v1/machines/"+m.ID+"/release", nil, body)
	if code != 200 {
		h.t.Fatalf("release %s with %s: %d %s", m.Hostname, body, code, out)
	}
	return h.operation(m, events.TypeMachineErasing, "erasing")
}

// TestReleaseWithErase: a release with erase boots the machine into the
// ephemeral environment with purpose erase and the mode; the agent's
// success, passed on by the rack, makes it ready saying the disks were
// erased, its failure failed saying why. A mode the region does not know
// is a 400 naming the field; a release with erase none abandons an erase,
// and the agent that speaks after changes nothing; an erasing machine is
// not marked broken (fixed, it would be ready unerased).
func TestReleaseWithErase(t *testing.T) {
	h := startRegion(t)
	r := ephemeralRack(t, h)
	rackID := r.ID()
	ok := h.failedMachine(rackID, "wipe", "52:54:00:de:00:01")

	for _, body := range []string{`{"erase":"shred"}`, `{"erase":""}x`, `{"erase":1}`} {
		code, out, _ := h.raw("POST", h.api+"/api/v1/machines/"+ok.ID+"/release", nil, body)
		if code != 400 || !strings.Contains(out, "erase") && !strings.Contains(out, "JSON") {
			t.Fatalf("release with %s: %d %s", body, code, out)
		}
	}
	if got := h.commissionedMachine(ok.ID); got.Status != "failed" {
		t.Fatalf("a refused release changed the machine: %+v", got)
	}

	op := h.releaseErase(ok, `{"erase":"quick"}`)
	var raw []byte
	if err := h.pool.QueryRow(context.Background(), `SELECT decision FROM boot_decisions WHERE mac = $1`, ok.MACs[0]).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var d events.BootDecision
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.Purpose != events.BootPurposeErase || d.DeploymentID != op || d.RackID != rackID || !slices.Contains(d.Params, "rackplane.erase=quick") {
		t.Fatalf("boot decision %+v, want purpose erase, quick, for operation %s on rack %s", d, op, rackID)
	}
	h.eventually(10*time.Second, "the rack's boot config to run the agent", func() error {
		_, cfg, _ := h.raw("GET", "http://"+r.HTTPAddr()+"/pxelinux.cfg/01-"+strings.ReplaceAll(ok.MACs[0], ":", "-"), nil, "")
		if !strings.Contains(cfg, "rackplane.purpose=erase") || !strings.Contains(cfg, "rackplane.erase=quick") ||
			!strings.Contains(cfg, "/agent/"+ok.ID+"/") {
			return fmt.Errorf("config %q", cfg)
		}
		return nil
	})
	if code := h.do("POST", "/api/v1/machines/"+ok.ID+"/mark-broken", map[string]any{"reason": "x"}, nil); code != 409 {
		t.Fatalf("mark-broken while erasing: %d", code)
	}
	n := h.followerCount(events.TypeAgentFinished)
	h.agentFinishedFor(events.BootPurposeErase, rackID, ok, op, true, "quick erase of 2 disks", n+1)
	h.waitStatus(ok.ID, "ready", 10*time.Second)
	var page struct {
		Events []struct {
			Data events.MachineRef
		}
	}
	h.getJSON("/api/v1/events?limit=1000&stream=machine/"+ok.ID+"&type="+events.TypeMachineReleased, &page)
	if len(page.Events) != 1 || page.Events[0].Data.Reason != "the disks were erased: quick erase of 2 disks" {
		t.Fatalf("released events %+v", page.Events)
	}

	bad := h.failedMachine(rackID, "wipe-bad", "52:54:00:de:00:02")
	op = h.releaseErase(bad, `{"erase":"full"}`)
	h.agentFinishedFor(events.BootPurposeErase, rackID, bad, op, false, "vda: input/output error", n+3)
	if m := h.waitStatus(bad.ID, "failed", 10*time.Second); m.StatusReason != "erasing the disks failed: vda: input/output error" {
		t.Fatalf("failed erase: %+v", m)
	}

	gaveUp := h.failedMachine(rackID, "wipe-none", "52:54:00:de:00:03")
	op = h.releaseErase(gaveUp, `{"erase":"quick"}`)
	if code := h.do("POST", "/api/v1/machines/"+gaveUp.ID+"/release", map[string]any{"erase": "none"}, nil); code != 200 {
		t.Fatalf("release with erase none while erasing: %d", code)
	}
	h.waitStatus(gaveUp.ID, "ready", 10*time.Second)
	h.agentFinishedFor(events.BootPurposeErase, rackID, gaveUp, op, false, "too late", n+5)
	if m := h.commissionedMachine(gaveUp.ID); m.Status != "ready" {
		t.Fatalf("the abandoned erase's agent changed the machine: %+v", m)
	}
}

// TestEraseTimeout: an erase whose agent never gives its outcome fails
// the machine once -erase-timeout has passed; the region's -release-erase
// erases when the request does not say.
func TestEraseTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	h := startRegionWith(t, func(c *region.Config) { c.EraseTimeout = timeout; c.ReleaseErase = events.EraseFull })
	r := ephemeralRack(t, h)
	silent := h.failedMachine(r.ID(), "silent", "52:54:00:de:01:01")
	h.releaseErase(silent, "")
	m := h.waitStatus(silent.ID, "failed", timeout+10*time.Second)
	if want := "erasing the disks failed: the agent did not report within the erase timeout of 3s"; m.StatusReason != want {
		t.Fatalf("reason %q, want %q", m.StatusReason, want)
	}
	// The watch counts a timeout after the machine has failed.
	h.eventually(5*time.Second, "the timed-out erase counted", func() error {
		if _, metrics, _ := h.raw("GET", h.api+"/metrics", nil, ""); !strings.Contains(metrics, "rackplane_region_erases_timed_out_total 1") {
			return fmt.Errorf("metrics lack it")
		}
		return nil
	})
}

// TestErasePowersOn: a machine with power parameters released with erase
// is powered on into the ephemeral environment by the region's power
// lifecycle, as a deploying one is into its installer; once the agent
// reports, it is ready (the environment powers it off itself).
func TestErasePowersOn(t *testing.T) {
	h := startRegion(t)
	r := ephemeralRack(t, h)
	pr := powerRack(t, h, testLogger(), 5*time.Second)
	m := h.failedMachine(r.ID(), "wipe-power", "52:54:00:de:02:01")
	bmc := filepath.Join(t.TempDir(), "bmc")
	for file, body := range map[string]string{bmc: "off\n", bmc + ".password": "Erase-Pw_2231"} {
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if code := h.do("PUT", "/api/v1/machines/"+m.ID+"/power", map[string]any{"driver": "shellbmc", "address": bmc,
		"username": "admin", "password": "Erase-Pw_2231", "rack_id": pr.ID()}, nil); code != 200 {
		t.Fatalf("set power: %d", code)
	}
	op := h.releaseErase(m, `{"erase":"quick"}`)
	h.eventually(20*time.Second, "the BMC on", func() error {
		if b, _ := os.ReadFile(bmc); strings.TrimSpace(string(b)) != "on" {
			return fmt.Errorf("BMC %q", b)
		}
		return nil
	})
	if got := h.powerRequests(m.ID); !slices.Equal(got, []string{"status", "on"}) {
		t.Fatalf("power requests %v, want status then on", got)
	}
	h.agentFinishedFor(events.BootPurposeErase, r.ID(), m, op, true, "", h.followerCount(events.TypeAgentFinished)+1)
	h.waitStatus(m.ID, "ready", 10*time.Second)
	if got := h.statuses(m.ID); !slices.Equal(got[len(got)-2:], []string{"erasing", "released"}) {
		t.Fatalf("statuses %v: want erasing, released", got)
	}
}
