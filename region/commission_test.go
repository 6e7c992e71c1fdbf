package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
)

// commissionedMachine is a machine as the API shows it while it
// commissions.
type commissionedMachine struct {
	Status       string   `json:"status"`
	StatusReason string   `json:"status_reason"`
	DeploymentID string   `json:"deployment_id"`
	Actions      []string `json:"actions"`
}

func (h *harness) commissionedMachine(id string) commissionedMachine {
	h.t.Helper()
	var m commissionedMachine
	if code := h.getJSON("/api/v1/machines/"+id, &m); code != 200 {
		h.t.Fatalf("machine %s: %d", id, code)
	}
	return m
}

// ephemeralRack starts rack-a with the ephemeral environment imported, as
// an operator imports it: os rackplane, release ephemeral, amd64.
func ephemeralRack(t *testing.T, h *harness) *rack.Rack {
	t.Helper()
	r, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	importInto(t, r, imageSource(t, "rackplane/ephemeral/amd64/ga"))
	h.waitForRegistry("rackplane/ephemeral/amd64/ga:rack-a")
	return r
}

// commission asks the API to commission the machine and returns the
// operation it started: the id of its machine_commissioning event, which
// the machine shows as its deployment_id.
func (h *harness) commission(m machineOut) string {
	h.t.Helper()
	code, body, _ := h.raw("POST", h.api+"/api/v1/machines/"+m.ID+"/commission", nil, "")
	if code != 200 {
		h.t.Fatalf("commission %s: %d %s", m.Hostname, code, body)
	}
	return h.operation(m, events.TypeMachineCommissioning, "commissioning")
}

// operation returns the operation the machine is in: the id of its last
// event of typ, which the machine, now in status, shows as its
// deployment_id.
func (h *harness) operation(m machineOut, typ, status string) string {
	h.t.Helper()
	var page struct {
		Events []struct{ ID string }
	}
	h.getJSON("/api/v1/events?limit=1000&stream=machine/"+m.ID+"&type="+typ, &page)
	if len(page.Events) == 0 {
		h.t.Fatalf("no %s event of %s", events.Name(typ), m.Hostname)
	}
	op := page.Events[len(page.Events)-1].ID
	if got := h.commissionedMachine(m.ID); got.Status != status || got.DeploymentID != op {
		h.t.Fatalf("%s: %+v, want %s with operation %s", m.Hostname, got, status, op)
	}
	return op
}

// agentFinished publishes a commissioning agent's outcome as rack rackID
// passes it on, and waits until the region's follower has read it.
func (h *harness) agentFinished(rackID string, m machineOut, op string, success bool, message string, n int) {
	h.t.Helper()
	h.agentFinishedFor(events.BootPurposeCommission, rackID, m, op, success, message, n)
}

// agentFinishedFor is agentFinished for the agent of a boot of purpose.
func (h *harness) agentFinishedFor(purpose, rackID string, m machineOut, op string, success bool, message string, n int) {
	h.t.Helper()
	ev, err := events.New(events.RackSource(rackID), events.TypeAgentFinished, events.MachineStreamName(m.ID), time.Now(),
		events.AgentFinished{MachineID: m.ID, OperationID: op, Purpose: purpose, Success: success, Message: message})
	if err != nil {
		h.t.Fatal(err)
	}
	h.publishRaw(rackID, ev)
	h.logged(ev.ID)
	h.followerHandled(events.TypeAgentFinished, n)
}

// TestCommissioning: without the ephemeral environment a commission is a
// conflict that says how to import one; with it the machine commissions
// with a boot of purpose commission naming the operation, and the agent's
// outcome, passed on by the rack that serves its boot, leaves it ready or
// failed with the agent's message. An outcome for an earlier operation,
// or from another rack, changes nothing.
func TestCommissioning(t *testing.T) {
	h := startRegion(t)
	ok := h.newMachine("ok", "52:54:00:dd:00:01")
	code, body, _ := h.raw("POST", h.api+"/api/v1/machines/"+ok.ID+"/commission", nil, "")
	if code != 409 || !strings.Contains(body, "import one (os rackplane, release ephemeral, arch amd64)") {
		t.Fatalf("commission without an environment: %d %s", code, body)
	}

	r := ephemeralRack(t, h)
	rackID := r.ID()
	// The environment commissions; it is not an operating system to
	// deploy, though racks offer it like one.
	code, body, _ = h.raw("POST", h.api+"/api/v1/machines/"+ok.ID+"/deploy", nil, `{"os":"rackplane","release":"ephemeral"}`)
	if code != 400 || !strings.Contains(body, "commission the machine instead") {
		t.Fatalf("deploy the ephemeral environment: %d %s", code, body)
	}
	if a := h.commissionedMachine(ok.ID).Actions; !strings.Contains(strings.Join(a, " "), "commission") {
		t.Fatalf("a ready machine offers %v, without commission", a)
	}
	op := h.commission(ok)
	// The boot decision boots the environment for the operation, and the
	// rack serves it with the agent's URL.
	var raw []byte
	if err := h.pool.QueryRow(context.Background(), `SELECT decision FROM boot_decisions WHERE mac = $1`, ok.MACs[0]).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	var d events.BootDecision
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.Purpose != events.BootPurposeCommission || d.DeploymentID != op || d.RackID != rackID ||
		!strings.HasPrefix(d.Kernel, "rackplane/amd64/ga/ephemeral/") {
		t.Fatalf("boot decision %+v, want purpose commission for operation %s on rack %s", d, op, rackID)
	}
	h.eventually(10*time.Second, "the rack's boot config to run the agent", func() error {
		_, cfg, _ := h.raw("GET", "http://"+r.HTTPAddr()+"/pxelinux.cfg/01-"+strings.ReplaceAll(ok.MACs[0], ":", "-"), nil, "")
		if !strings.Contains(cfg, "rackplane.purpose=commission") || !strings.Contains(cfg, "/agent/"+ok.ID+"/") {
			return fmt.Errorf("config %q", cfg)
		}
		return nil
	})
	h.agentFinished(rackID, ok, op, true, "inventory taken", 1)
	if m := h.waitStatus(ok.ID, "ready", 10*time.Second); m.StatusReason != "" {
		t.Fatalf("commissioned machine: %+v", m)
	}

	bad := h.newMachine("bad", "52:54:00:dd:00:02")
	h.agentFinished(rackID, bad, h.commission(bad), false, "no disks found", 2)
	if m := h.waitStatus(bad.ID, "failed", 10*time.Second); m.StatusReason != "commissioning failed: no disks found" {
		t.Fatalf("failed commissioning: %+v", m)
	}

	// An agent of an earlier commissioning speaks late; another rack
	// speaks for a machine whose boot rack-a serves.
	late := h.newMachine("late", "52:54:00:dd:00:03")
	rackA := rackID
	if code := h.do("PATCH", "/api/v1/machines/"+late.ID, map[string]any{"boot_rack_id": rackA}, nil); code != 200 {
		t.Fatalf("set boot rack: %d", code)
	}
	op1 := h.commission(late)
	if code := h.do("POST", "/api/v1/machines/"+late.ID+"/mark-failed", map[string]any{"reason": "hung"}, nil); code != 200 {
		t.Fatalf("mark failed: %d", code)
	}
	op2 := h.commission(late)
	h.agentFinished(rackID, late, op1, true, "", 3)
	h.agentFinished(uuid.NewString(), late, op2, true, "", 4)
	if m := h.commissionedMachine(late.ID); m.Status != "commissioning" || m.DeploymentID != op2 {
		t.Fatalf("after an earlier operation's outcome and another rack's: %+v", m)
	}
	h.agentFinished(rackID, late, op2, false, "memory test failed", 5)
	if m := h.waitStatus(late.ID, "failed", 10*time.Second); m.StatusReason != "commissioning failed: memory test failed" {
		t.Fatalf("late: %+v", m)
	}
	// The outcome of a finished commissioning, again, changes nothing.
	h.agentFinished(rackID, ok, op, false, "again", 6)
	if m := h.commissionedMachine(ok.ID); m.Status != "ready" {
		t.Fatalf("a repeated outcome changed the machine: %+v", m)
	}
}

// TestCommissioningTimeout: an agent that never gives its outcome fails
// the machine once -commission-timeout has passed, with the reason.
func TestCommissioningTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	h := startRegionWith(t, func(c *region.Config) { c.CommissionTimeout = timeout })
	ephemeralRack(t, h)
	silent := h.newMachine("silent", "52:54:00:dd:01:01")
	h.commission(silent)
	start := time.Now()
	m := h.waitStatus(silent.ID, "failed", timeout+10*time.Second)
	if waited := time.Since(start); waited < timeout-time.Second {
		t.Fatalf("failed after %s, before the timeout of %s", waited, timeout)
	}
	if want := "the commissioning agent did not report within the commissioning timeout of 3s"; m.StatusReason != want {
		t.Fatalf("reason %q, want %q", m.StatusReason, want)
	}
	// The watch counts a timeout after the machine has failed.
	h.eventually(5*time.Second, "the timed-out commissioning counted", func() error {
		if _, metrics, _ := h.raw("GET", h.api+"/metrics", nil, ""); !strings.Contains(metrics, "rackplane_region_commissionings_timed_out_total 1") {
			return fmt.Errorf("metrics lack it")
		}
		return nil
	})
}

// TestUnknownMACIsCommissioned: an unknown MAC that PXE-boots from a rack
// with the ephemeral environment becomes a machine that commissions at
// once (-auto-commission, on by default), and the rack then serves it the
// environment with the agent; with -auto-commission=false it stays new.
func TestUnknownMACIsCommissioned(t *testing.T) {
	for _, tt := range []struct {
		name string
		auto bool
		want string
	}{
		{"auto-commission on", true, "commissioning"},
		{"auto-commission off", false, "new"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startRegionWith(t, func(c *region.Config) { c.AutoCommission = tt.auto })
			r := ephemeralRack(t, h)
			const mac = "52:54:00:dd:10:01"
			cfgPath := "http://" + r.HTTPAddr() + "/pxelinux.cfg/01-" + strings.ReplaceAll(mac, ":", "-")
			if code, cfg, _ := h.raw("GET", cfgPath, nil, ""); code != 200 || !strings.Contains(cfg, "local") {
				t.Fatalf("first boot of an unknown MAC: %d %q, want a local boot", code, cfg)
			}
			var list struct {
				Machines []struct{ ID, Status, Origin string }
			}
			h.eventually(10*time.Second, "the machine discovered", func() error {
				h.getJSON("/api/v1/machines?mac="+mac, &list)
				if len(list.Machines) != 1 || list.Machines[0].Status != tt.want {
					return fmt.Errorf("machines %+v", list.Machines)
				}
				return nil
			})
			m := h.commissionedMachine(list.Machines[0].ID)
			if !tt.auto {
				if m.DeploymentID != "" {
					t.Fatalf("a machine left new has an operation: %+v", m)
				}
				return
			}
			var page struct {
				Events []struct {
					ID string
				}
			}
			h.getJSON("/api/v1/events?limit=100&stream=machine/"+list.Machines[0].ID+"&type="+events.TypeMachineCommissioning, &page)
			if len(page.Events) != 1 || page.Events[0].ID != m.DeploymentID {
				t.Fatalf("commissioning events %+v, machine %+v", page.Events, m)
			}
			// The firmware asks again, as the rack's iPXE script has it
			// do while the machine is unknown: now it boots the agent.
			h.eventually(10*time.Second, "the rack's boot config to run the agent", func() error {
				_, cfg, _ := h.raw("GET", cfgPath, nil, "")
				if !strings.Contains(cfg, "rackplane.purpose=commission") || !strings.Contains(cfg, "/agent/"+list.Machines[0].ID+"/") {
					return fmt.Errorf("config %q", cfg)
				}
				return nil
			})
		})
	}
}
