package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestDevBootsAMachine runs `rackplane dev -boot-interface eth0` on a
// network segment of its own, as an operator tries Rackplane on a lab
// switch: the built-in rack's DHCP (managed here), TFTP on port 69 and
// HTTP serve eth0's address. Through dev's API the test imports an image
// into the rack, enrols a VM's MAC and deploys it; the VM, whose only way
// to boot is the network, gets its address and the iPXE script from the
// rack, boots the image with its machine's kernel parameters, fetches its
// preseed and reports success, and the machine is deployed.
func TestDevBootsAMachine(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	qemu, kernel, initrd := vmImage(t)

	seg, a, rackID := devLab(t)
	vmNS, tap := seg.Tap()
	a.importBookworm(rackID, kernel, initrd)

	const mac = "52:54:00:de:70:01"
	m := a.deployNew("lab1", mac, "lab", "#cloud-config\nhostname: {{.Machine.Hostname}}\n# report: {{.URLs.Status}}\n", "rackplane.lab=dev")

	serial := filepath.Join(t.TempDir(), "serial.log")
	qctx, qcancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer qcancel()
	start := time.Now()
	// The VM retries DHCP and boot until the rack has the deployment's
	// decision, as a real machine's firmware is restarted; one boot is
	// normally enough.
	var console []byte
	for attempt := 1; attempt <= 3; attempt++ {
		out, err := exec.CommandContext(qctx, "ip", "netns", "exec", vmNS, qemu, "-accel", "tcg", "-m", "384", "-nographic", "-no-reboot",
			"-monitor", "none", "-serial", "file:"+serial, "-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
			"-device", "e1000,netdev=n0,mac="+mac, "-boot", "n").CombinedOutput()
		console, _ = os.ReadFile(serial)
		if strings.Contains(string(console), "PRESEED-END") {
			break
		}
		if qctx.Err() != nil || attempt == 3 {
			t.Fatalf("the VM did not boot the deployment (%v after %s)\nqemu:\n%s\nserial:\n%s", err, time.Since(start).Round(time.Second),
				tail(string(out), 20), tail(string(console), 40))
		}
	}
	t.Logf("the VM booted from rackplane dev in %s", time.Since(start).Round(time.Second))
	if !strings.Contains(string(console), "rackplane.lab=dev") {
		t.Errorf("the kernel command line lacks the deployment's parameters:\n%s", tail(string(console), 30))
	}
	if got := preseedOf(t, string(console)); !strings.Contains(got, "hostname: lab1") {
		t.Errorf("the VM fetched preseed %q, want its machine's", got)
	}
	if !strings.Contains(string(console), "REPORT: machine "+m.ID+" is deployed") {
		t.Fatalf("the VM's success report was not taken\nserial:\n%s", tail(string(console), 40))
	}
	var after struct{ Status string }
	a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &after)
	if after.Status != "deployed" {
		t.Fatalf("after the VM reported success the machine is %s", after.Status)
	}
}

// devLab runs `rackplane dev -boot-interface eth0` on a network segment of
// its own, the rack's DHCP managed there, as an operator tries Rackplane
// on a lab switch, and returns the segment, an API client reaching dev's
// API from the lab namespace, and the id of dev's rack once online.
func devLab(t *testing.T, flags ...string) (*netnstest.Segment, api, string) {
	t.Helper()
	seg := netnstest.New(t)
	rackNS := seg.Host("lab", "02:00:00:00:00:02", "10.20.0.2/24")
	// dev's PostgreSQL is the test's, reached from the lab namespace's
	// loopback as from a laptop's.
	dbURL := pgtest.NewDatabase(t)
	netnstest.Forward(t, rackNS, "127.0.0.1:5432", "127.0.0.1:5432")
	if !strings.Contains(dbURL, "127.0.0.1:5432") && !strings.Contains(dbURL, "localhost:5432") {
		t.Fatalf("this test forwards PostgreSQL on 127.0.0.1:5432 into its namespace; the test database is %s", dbURL)
	}

	dataDir := filepath.Join(t.TempDir(), "dev")
	_, devOut := netnstest.Start(t, rackNS, append([]string{filepath.Join(binDir, "rackplane"), "dev", "-data-dir", dataDir,
		"-database-url", strings.Replace(dbURL, "localhost:", "127.0.0.1:", 1),
		"-boot-interface", "eth0", "-dhcp-mode", "managed", "-dhcp-subnets", subnetsFile(t), "-dhcp-event-interval", "200ms"}, flags...)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rackplane dev:\n%s", tail(devOut.String(), 60))
		}
	})
	// What dev prints tells the newcomer where machines boot from.
	if !netnstest.WaitFor(30*time.Second, func() bool { return strings.Contains(devOut.String(), "Rackplane dev is running") }) {
		t.Fatalf("rackplane dev did not start")
	}
	bootURL := "http://10.20.0.2:5248"
	for i, f := range flags {
		if f == "-boot-url" && i+1 < len(flags) {
			bootURL = flags[i+1]
		}
	}
	for _, want := range []string{"10.20.0.2:69", "boot URL       " + bootURL, "managed on eth0 (1 subnets)"} {
		if !strings.Contains(devOut.String(), want) {
			t.Errorf("rackplane dev's banner lacks %q:\n%s", want, devOut.String())
		}
	}
	tokenB, err := os.ReadFile(filepath.Join(dataDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	a := api{t: t, base: "http://127.0.0.1:5240", token: strings.TrimSpace(string(tokenB)), client: netnstest.HTTPClient(rackNS)}

	var rackID string
	eventually(t, 30*time.Second, "dev's rack online", func() error {
		var out struct {
			Racks []struct {
				ID     string
				Online bool
			}
		}
		if code := a.call("GET", "/api/v1/racks", nil, nil, &out); code != 200 || len(out.Racks) != 1 || !out.Racks[0].Online {
			return fmt.Errorf("racks: %d %+v", code, out)
		}
		rackID = out.Racks[0].ID
		return nil
	})
	return seg, a, rackID
}
