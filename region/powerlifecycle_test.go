package region_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/region"
)

// machineStatus is a machine as the API shows it, with the reason of its
// status and its power.
type machineStatus struct {
	Status       string `json:"status"`
	StatusReason string `json:"status_reason"`
	PowerState   string `json:"power_state"`
}

func (h *harness) machineStatus(id string) machineStatus {
	h.t.Helper()
	var m machineStatus
	if code := h.getJSON("/api/v1/machines/"+id, &m); code != 200 {
		h.t.Fatalf("get machine %s: %d", id, code)
	}
	return m
}

// waitStatus waits until the machine is status, and returns it.
func (h *harness) waitStatus(id, status string, within time.Duration) machineStatus {
	h.t.Helper()
	var m machineStatus
	h.eventually(within, "machine "+status, func() error {
		if m = h.machineStatus(id); m.Status != status {
			return fmt.Errorf("%+v", m)
		}
		return nil
	})
	return m
}

// waitPower waits until the machine shows power state: the rack's
// outcome comes through the event stream, a moment after its reply.
func (h *harness) waitPower(id, state string) {
	h.t.Helper()
	h.eventually(10*time.Second, "power "+state, func() error {
		if got := h.machineStatus(id); got.PowerState != state {
			return fmt.Errorf("%+v", got)
		}
		return nil
	})
}

// powerRequests are the power actions the region asked for the machine,
// in order (set_boot with its device).
func (h *harness) powerRequests(id string) []string {
	h.t.Helper()
	rows, err := h.pool.Query(context.Background(), `SELECT data FROM events WHERE stream = $1 AND type = $2 ORDER BY position`,
		events.MachineStreamName(id), events.TypePowerActionRequested)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d events.PowerActionRequested
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			h.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			h.t.Fatal(err)
		}
		a := string(d.Action)
		if d.BootDevice != "" {
			a += ":" + d.BootDevice
		}
		out = append(out, a)
	}
	return out
}

// statuses are the status events of the machine, in order, by their
// short names (deploying, releasing, released, failed...).
func (h *harness) statuses(id string) []string {
	h.t.Helper()
	rows, err := h.pool.Query(context.Background(), `SELECT type FROM events WHERE stream = $1 AND type LIKE 'rackplane.region.machine_%' ORDER BY position`,
		events.MachineStreamName(id))
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ string
		if err := rows.Scan(&typ); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, strings.TrimSuffix(strings.TrimPrefix(typ, "rackplane.region.machine_"), ".v1"))
	}
	return out
}

// TestPowerLifecycle: deploy powers a machine on through its rack (a
// cycle when it is on already), release switches it off and the machine
// is ready only then, a failure another try may cure is retried as
// configured, one it cannot (the BMC refuses the credentials) fails the
// machine at once, and each failure leaves the machine failed with the
// reason. The BMC is the shellbmc script driver: a file holding on or off.
func TestPowerLifecycle(t *testing.T) {
	var logs netnstest.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startRegionLogged(t, func(c *region.Config) { c.PowerRetries, c.PowerRetryDelay = 2, 100*time.Millisecond }, log)
	tap := tapNATS(t, h)
	startNobleRack(t, h)
	pr := powerRack(t, h, log.With("process", "rack"), 5*time.Second)
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "default", "content": "#cloud-config\n"}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	const secret = "Lifecycle-Pw_2231"
	dir := t.TempDir()
	newBMC := func(name, state string) string {
		bmc := filepath.Join(dir, name)
		for file, body := range map[string]string{bmc: state + "\n", bmc + ".password": secret} {
			if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return bmc
	}
	bmcState := func(bmc string) string {
		b, err := os.ReadFile(bmc)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	waitBMC := func(bmc, want string) {
		t.Helper()
		h.eventually(20*time.Second, "the BMC "+want, func() error {
			if s := bmcState(bmc); s != want {
				return fmt.Errorf("BMC %s", s)
			}
			return nil
		})
	}
	withPower := func(hostname, mac, bmc string) machineOut {
		m := h.newMachine(hostname, mac)
		if code := h.do("PUT", "/api/v1/machines/"+m.ID+"/power", map[string]any{"driver": "shellbmc", "address": bmc,
			"username": "admin", "password": secret, "rack_id": pr.ID()}, nil); code != 200 {
			t.Fatalf("set power of %s: %d", hostname, code)
		}
		return m
	}
	release := func(m machineOut, body string) {
		t.Helper()
		if code, resp, _ := h.raw("POST", h.api+"/api/v1/machines/"+m.ID+"/release", nil, body); code != 200 {
			t.Fatalf("release %s: %d %s", m.Hostname, code, resp)
		}
	}

	// deploy powers on, release powers off.
	{
		bmc := newBMC("off-bmc", "off")
		m := withPower("lc1", "52:54:00:cc:00:01", bmc)
		h.deploy(m)
		waitBMC(bmc, "on")
		// The driver has no set-boot: the lifecycle does without, and asks
		// the state first to choose on over cycle.
		h.eventually(10*time.Second, "the machine shows on", func() error {
			if got := h.machineStatus(m.ID); got.Status != "deploying" || got.PowerState != "on" {
				return fmt.Errorf("%+v", got)
			}
			return nil
		})
		if got := h.powerRequests(m.ID); !slices.Equal(got, []string{"status", "on"}) {
			t.Fatalf("power requests %v, want status then on", got)
		}
		release(m, "")
		h.waitStatus(m.ID, "ready", 20*time.Second)
		if s := bmcState(bmc); s != "off" {
			t.Fatalf("after release: BMC %s", s)
		}
		h.waitPower(m.ID, "off")
		if got := h.statuses(m.ID); !slices.Equal(got[len(got)-3:], []string{"deploying", "releasing", "released"}) {
			t.Fatalf("statuses %v: want deploying, releasing, released", got)
		}
		if got := h.powerRequests(m.ID); !slices.Equal(got, []string{"status", "on", "off"}) {
			t.Fatalf("power requests %v", got)
		}
	}

	// a machine that is on is cycled.
	{
		bmc := newBMC("on-bmc", "on")
		m := withPower("lc2", "52:54:00:cc:00:02", bmc)
		h.deploy(m)
		h.eventually(20*time.Second, "a cycle", func() error {
			if got := h.powerRequests(m.ID); !slices.Equal(got, []string{"status", "cycle"}) {
				return fmt.Errorf("power requests %v", got)
			}
			return nil
		})
		// Released without switching off, as the request asks.
		release(m, `{"power_off": false}`)
		if got := h.machineStatus(m.ID); got.Status != "ready" || bmcState(bmc) != "on" {
			t.Fatalf("release without power off: %+v, BMC %s", got, bmcState(bmc))
		}
	}

	// credentials refused fail the deployment at once.
	{
		bmc := newBMC("refusing-bmc", "off")
		if err := os.WriteFile(bmc+".password", []byte("another"), 0o600); err != nil {
			t.Fatal(err)
		}
		m := withPower("lc3", "52:54:00:cc:00:03", bmc)
		h.deploy(m)
		got := h.waitStatus(m.ID, "failed", 20*time.Second)
		if !strings.Contains(got.StatusReason, "powering the machine on into its deployment failed") || !strings.Contains(got.StatusReason, "auth_failed") ||
			strings.Contains(got.StatusReason, secret) {
			t.Fatalf("reason %q", got.StatusReason)
		}
		if got := h.powerRequests(m.ID); len(got) != 1 {
			t.Fatalf("power requests %v: a refusal of the credentials is not retried", got)
		}
	}

	// a BMC that fails is retried, then fails the machine; a release powers off once it answers.
	{
		bmc := newBMC("broken-bmc", "off")
		if err := os.Remove(bmc); err != nil { // status cannot read it: fails
			t.Fatal(err)
		}
		m := withPower("lc4", "52:54:00:cc:00:04", bmc)
		h.deploy(m)
		got := h.waitStatus(m.ID, "failed", 30*time.Second)
		if !strings.Contains(got.StatusReason, "after 3 attempts") {
			t.Fatalf("reason %q: want the attempts (1 and 2 retries)", got.StatusReason)
		}
		if got := h.powerRequests(m.ID); !slices.Equal(got, []string{"status", "status", "status"}) {
			t.Fatalf("power requests %v", got)
		}
		// The operator repairs the BMC and releases the failed machine.
		newBMC("broken-bmc", "on")
		release(m, "{}")
		h.waitStatus(m.ID, "ready", 20*time.Second)
		if bmcState(bmc) != "off" {
			t.Fatalf("BMC %s", bmcState(bmc))
		}
		h.waitPower(m.ID, "off")
	}

	// a release whose power off keeps failing leaves the machine failed.
	{
		bmc := newBMC("stuck-bmc", "off")
		m := withPower("lc5", "52:54:00:cc:00:05", bmc)
		h.deploy(m)
		waitBMC(bmc, "on")
		if err := os.Chmod(bmc, 0o400); err != nil { // power-off cannot write it
			t.Fatal(err)
		}
		if os.Getuid() == 0 {
			// root writes read-only files: take the file away instead.
			if err := os.Rename(bmc, bmc+".gone"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(bmc, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		release(m, "")
		got := h.waitStatus(m.ID, "failed", 30*time.Second)
		if !strings.Contains(got.StatusReason, "switching the machine off failed after 3 attempts") {
			t.Fatalf("reason %q", got.StatusReason)
		}
		if st := h.statuses(m.ID); !slices.Equal(st[len(st)-2:], []string{"releasing", "failed"}) {
			t.Fatalf("statuses %v", st)
		}
	}

	// Parameters set after a deployment started do not power it (someone
	// booted the machine by hand): by the time a deployment started
	// later is powered on, the earlier one has had no power request.
	{
		byHand := h.newMachine("lc6", "52:54:00:cc:00:06")
		h.deploy(byHand)
		bmc6 := newBMC("hand-bmc", "on")
		if code := h.do("PUT", "/api/v1/machines/"+byHand.ID+"/power", map[string]any{"driver": "shellbmc", "address": bmc6,
			"username": "admin", "password": secret, "rack_id": pr.ID()}, nil); code != 200 {
			t.Fatalf("set power: %d", code)
		}
		bmc7 := newBMC("later-bmc", "off")
		later := withPower("lc7", "52:54:00:cc:00:07", bmc7)
		h.deploy(later)
		waitBMC(bmc7, "on")
		if got := h.powerRequests(byHand.ID); len(got) != 0 || bmcState(bmc6) != "on" {
			t.Fatalf("the deployment booted by hand had power requests %v (BMC %s)", got, bmcState(bmc6))
		}
	}

	// A release stuck switching off a BMC that hangs shows its work, and
	// a release again without power off ends it.
	{
		bmc := newBMC("hanging-bmc", "off")
		m := withPower("lc8", "52:54:00:cc:00:08", bmc)
		h.deploy(m)
		waitBMC(bmc, "on")
		if err := os.WriteFile(bmc+".hang", nil, 0o600); err != nil {
			t.Fatal(err)
		}
		release(m, "")
		h.eventually(10*time.Second, "the power off running", func() error {
			var v struct {
				Lifecycle *struct {
					Kind    string
					Running bool
				}
			}
			h.getJSON("/api/v1/machines/"+m.ID+"/power?live=false", &v)
			if v.Lifecycle == nil || v.Lifecycle.Kind != "release" || !v.Lifecycle.Running {
				return fmt.Errorf("lifecycle %+v", v.Lifecycle)
			}
			return nil
		})
		if got := h.machineStatus(m.ID); got.Status != "releasing" {
			t.Fatalf("machine %+v while its BMC hangs", got)
		}
		release(m, `{"power_off": false}`)
		if got := h.machineStatus(m.ID); got.Status != "ready" {
			t.Fatalf("release without power off of a releasing machine: %+v", got)
		}
		if err := os.Remove(bmc + ".hang"); err != nil {
			t.Fatal(err)
		}
	}

	// Whatever the lifecycle did, the password went only to the rack.
	h.secretOnlyInPowerRequests(secret, logs.String(), tap, pr.ID())
}
