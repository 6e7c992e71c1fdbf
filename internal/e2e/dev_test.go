package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestDevSystem runs `rackplane dev` as a newcomer would, joins two more
// rackd processes through its NATS, kills one with SIGKILL and brings it
// back, then stops dev with Ctrl-C and starts it again on the same data.
func TestDevSystem(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "dev")
	dbURL := pgtest.NewDatabase(t)
	natsAddr, httpAddr, rackHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	api := "http://" + httpAddr
	devArgs := []string{"dev", "-data-dir", dataDir, "-database-url", dbURL,
		"-nats-addr", natsAddr, "-http-addr", httpAddr, "-rack-http-addr", rackHTTP, "-tftp-addr", freeUDPAddr(t)}
	dev := start(t, "rackplane", devArgs...)
	tok := func() string {
		b, _ := os.ReadFile(filepath.Join(dataDir, "token"))
		return strings.TrimSpace(string(b))
	}

	took := eventually(t, 10*time.Second, "one online rack from rackplane dev", func() error {
		rs, err := racks(ctx, api, tok())
		if err != nil {
			return err
		}
		if len(rs) != 1 || !rs[0].Online {
			return fmt.Errorf("racks: %+v", rs)
		}
		return nil
	})
	t.Logf("rackplane dev listed one online rack %s after start", took.Round(time.Millisecond))
	rs, _ := racks(ctx, api, tok())
	devRackID := rs[0].ID
	// The CLI shows the same, as a newcomer would look.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"racks"}, []string{"dev-rack", "online"}},
		{[]string{"events", "-type", "rackplane.rack.rack_registered.v1"}, []string{"rackplane.rack.rack_registered.v1", "rack/" + devRackID}},
		{[]string{"version"}, []string{"rackplane"}},
	} {
		args := append(c.args, "-api", api, "-token", tok())
		if c.args[0] == "version" {
			args = c.args
		}
		out, err := exec.Command(filepath.Join(binDir, "rackplane"), args...).CombinedOutput()
		for _, w := range c.want {
			if err != nil || !strings.Contains(string(out), w) {
				t.Errorf("rackplane %v: %v\n%s\nwant %q in it", c.args, err, out, w)
			}
		}
	}
	if out, err := exec.Command(filepath.Join(binDir, "rackplane"), "racks", "-api", api, "-token", "rp_bad").CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Errorf("rackplane racks with a bad token: %v\n%s", err, out)
	}

	// Machines from the CLI, as an operator enrols and deploys them. The
	// dev rack has bootloaders but no OS image, so the deploy is refused
	// with the region's reason, and the unknown name is reported too.
	rp := func(cmd []string, rest ...string) (string, error) {
		args := append(append(append([]string{}, cmd...), "-api", api, "-token", tok()), rest...)
		out, err := exec.Command(filepath.Join(binDir, "rackplane"), args...).CombinedOutput()
		return string(out), err
	}
	// An operator following the log sees the machine appear.
	follow := start(t, "rackplane", "events", "-f", "-type", "rackplane.region.machine_created.v1", "-api", api, "-token", tok())
	out, err := rp([]string{"machine", "create"}, "-hostname", "cli1", "-mac", "52:54:00:dd:00:01")
	eventually(t, 10*time.Second, "rackplane events -f shows the new machine", func() error {
		if id := strings.TrimSpace(out); id == "" || !strings.Contains(follow.Output(), "machine/"+id) {
			return fmt.Errorf("events -f printed:\n%s", follow.Output())
		}
		return nil
	})
	follow.Kill()
	if _, perr := uuid.Parse(strings.TrimSpace(out)); err != nil || perr != nil {
		t.Errorf("rackplane machine create: %v\n%s", err, out)
	}
	if out, err := rp([]string{"machines"}); err != nil || !regexp.MustCompile(`cli1\s+ready\s+52:54:00:dd:00:01`).MatchString(out) {
		t.Errorf("rackplane machines: %v\n%s", err, out)
	}
	// A machine's own boot file, and a subnet of managed DHCP whose
	// reservation takes the machine's name.
	cli1 := strings.TrimSpace(out)
	if out, err := rp([]string{"machine", "update"}, "-boot-file", "quirk/snponly.efi", cli1); err != nil || strings.TrimSpace(out) != cli1 {
		t.Errorf("rackplane machine update -boot-file: %v\n%s", err, out)
	}
	out, err = rp([]string{"subnet", "create"}, "-rack", devRackID, "-cidr", "10.77.0.0/24", "-range", "10.77.0.100-10.77.0.150",
		"-router", "10.77.0.1", "-lease", "10m", "-reserve", "52:54:00:dd:00:01=10.77.0.7")
	var created struct{ ID string }
	if err != nil || json.Unmarshal([]byte(out), &created) != nil || !strings.Contains(out, `"hostname": "cli1"`) {
		t.Errorf("rackplane subnet create: %v\n%s", err, out)
	}
	if out, err := rp([]string{"subnets"}); err != nil || !regexp.MustCompile(created.ID+`\s+`+devRackID+`\s+10.77.0.0/24\s+-\s+10.77.0.100-10.77.0.150\s+10.77.0.1\s+1`).MatchString(out) {
		t.Errorf("rackplane subnets: %v\n%s", err, out)
	}
	if out, err := rp([]string{"subnet", "create"}, "-rack", devRackID, "-cidr", "10.77.0.0/16"); err == nil || !strings.Contains(out, "overlaps subnet "+created.ID) {
		t.Errorf("rackplane subnet create of an overlapping subnet: %v\n%s", err, out)
	}
	if out, err := rp([]string{"subnet", "delete"}, created.ID); err != nil {
		t.Errorf("rackplane subnet delete: %v\n%s", err, out)
	}
	out, err = rp([]string{"deploy"}, "-os", "ubuntu", "-release", "noble", "cli1", "nosuch")
	for _, w := range []string{"cli1", "no rack has an image", "nosuch\tno machine with the host name \"nosuch\"", "2 of 2 machines failed"} {
		if err == nil || !strings.Contains(out, w) {
			t.Errorf("rackplane deploy of an OS nobody has: %v\n%s\nwant %q in it", err, out, w)
		}
	}
	if out, err := rp([]string{"machines", "-status", "deploying"}); err != nil || strings.Contains(out, "cli1") {
		t.Errorf("rackplane machines -status deploying: %v\n%s", err, out)
	}

	// An image imported with the CLI makes the OS bootable, and the deploy
	// goes through.
	src := bookwormSource(t, []byte("dev kernel"), []byte("dev initrd"))
	out, err = rp([]string{"images", "import"}, "dev-rack", src)
	if err != nil || !strings.Contains(out, "succeeded") || !strings.Contains(out, "debian/amd64/generic/bookworm/stable/20261123") {
		t.Errorf("rackplane images import: %v\n%s", err, out)
	}
	if out, err := rp([]string{"images", "import"}, "dev-rack", filepath.Join(src, "nosuch")); err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("rackplane images import of a missing directory: %v\n%s", err, out)
	}
	// The rack reports its new image right after the import; the region
	// has it a moment later.
	for _, live := range [][]string{nil, {"-live"}} {
		eventually(t, 10*time.Second, fmt.Sprintf("rackplane os %v lists the image", live), func() error {
			out, err := rp([]string{"os"}, live...)
			if err != nil || !regexp.MustCompile(`debian\s+bookworm\s+amd64/generic\s+yes\s+dev-rack \(stable/20261123\)`).MatchString(out) {
				return fmt.Errorf("%v\n%s", err, out)
			}
			return nil
		})
	}
	if out, err := rp([]string{"deploy"}, "-os", "debian", "-release", "bookworm", "cli1"); err != nil || !regexp.MustCompile(`cli1\s+deploying\s+debian/bookworm`).MatchString(out) {
		t.Errorf("rackplane deploy: %v\n%s", err, out)
	}
	// The lifecycle's refusal reads the same in the CLI as in the API.
	out, err = rp([]string{"deploy"}, "-os", "debian", "-release", "bookworm", "cli1")
	if err == nil || !strings.Contains(out, "machine cli1 is already deploying; release it first (409 Conflict)") {
		t.Errorf("rackplane deploy of a deploying machine: %v\n%s", err, out)
	}
	if out, err := rp([]string{"mark-broken"}, "-reason", "no fan", "cli1"); err != nil || !regexp.MustCompile(`cli1\s+broken`).MatchString(out) {
		t.Errorf("rackplane mark-broken: %v\n%s", err, out)
	}
	if out, err := rp([]string{"mark-fixed"}, "cli1"); err != nil || !regexp.MustCompile(`cli1\s+ready`).MatchString(out) {
		t.Errorf("rackplane mark-fixed: %v\n%s", err, out)
	}

	if out := dev.Output(); !strings.Contains(out, "rackd -nats-url nats://"+natsAddr) {
		t.Errorf("dev does not say how a second rack joins:\n%s", out)
	}
	if out := dev.Output(); !strings.Contains(out, "web UI         http://"+httpAddr+"/#token="+tok()) {
		t.Errorf("dev does not give the web UI's sign-in link:\n%s", out)
	}

	const interval = 500 * time.Millisecond
	rackArgs := func(name string) []string {
		return []string{"-nats-url", "nats://" + natsAddr, "-join-token-file", filepath.Join(dataDir, "join-token"), "-data-dir", filepath.Join(t.TempDir(), name),
			"-name", name, "-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-heartbeat-interval", interval.String()}
	}
	r2args, r3args := rackArgs("rack2"), rackArgs("rack3")
	r2 := start(t, "rackd", r2args...)
	start(t, "rackd", r3args...)
	eventually(t, 10*time.Second, "two more racks online", func() error {
		rs, err := racks(ctx, api, tok())
		if err != nil {
			return err
		}
		for _, n := range []string{"rack2", "rack3"} {
			if r, ok := rackByName(rs, n); !ok || !r.Online {
				return fmt.Errorf("%s not online: %+v", n, rs)
			}
		}
		return nil
	})
	rs, _ = racks(ctx, api, tok())
	before, _ := rackByName(rs, "rack2")

	r2.Kill()
	offlineAfter := eventually(t, 10*time.Second, "killed rack offline", func() error {
		rs, err := racks(ctx, api, tok())
		if err != nil {
			return err
		}
		if r, _ := rackByName(rs, "rack2"); r.Online {
			return errors.New("rack2 still online")
		}
		if r, _ := rackByName(rs, "rack3"); !r.Online {
			return errors.New("rack3 went offline too")
		}
		return nil
	})
	// The region's own record says how long after the last heartbeat it
	// declared the rack offline: three intervals plus its 100 ms check
	// tick, and what a loaded machine adds to running it. This test's
	// polling of the API is not the region's latency, so the time from
	// SIGKILL only has to be in the same range.
	rs, _ = racks(ctx, api, tok())
	gone, _ := rackByName(rs, "rack2")
	if gone.LastHeartbeat == nil {
		t.Fatalf("offline rack2 has no last heartbeat: %+v", gone)
	}
	declared := gone.StatusChangedAt.Sub(*gone.LastHeartbeat)
	t.Logf("rack2 offline %s after its last heartbeat, %s after SIGKILL (heartbeat interval %s)",
		declared.Round(time.Millisecond), offlineAfter.Round(time.Millisecond), interval)
	if declared > 3*interval+500*time.Millisecond || declared < 3*interval {
		t.Errorf("declared offline %s after the last heartbeat, want three heartbeat intervals (%s) and little more", declared, 3*interval)
	}
	if offlineAfter > 3*interval+2*time.Second {
		t.Errorf("offline only %s after SIGKILL, want about three heartbeat intervals (%s)", offlineAfter, 3*interval)
	}

	start(t, "rackd", r2args...)
	eventually(t, 10*time.Second, "restarted rack online with the same id", func() error {
		rs, err := racks(ctx, api, tok())
		if err != nil {
			return err
		}
		r, _ := rackByName(rs, "rack2")
		if !r.Online || r.ID != before.ID {
			return fmt.Errorf("rack2 %+v, want online with id %s", r, before.ID)
		}
		return nil
	})

	if err := dev.Stop(); err != nil {
		t.Fatalf("rackplane dev did not stop cleanly on Ctrl-C: %v", err)
	}
	if !strings.Contains(dev.Output(), "Rackplane dev stopped.") {
		t.Errorf("dev did not say it stopped")
	}
	start(t, "rackplane", devArgs...)
	eventually(t, 10*time.Second, "second dev run reuses its data", func() error {
		rs, err := racks(ctx, api, tok())
		if err != nil {
			return err
		}
		r, ok := rackByName(rs, "dev-rack")
		if !ok || !r.Online || r.ID != devRackID {
			return fmt.Errorf("dev-rack %+v, want online with id %s", r, devRackID)
		}
		return nil
	})
}
