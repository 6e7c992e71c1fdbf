package e2e

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/lab"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/region/postgres"
)

// TestDevLab is the README's "A lab in one command": `rackplane dev -vms
// 2` makes its network namespace, runs dev's rack there, imports the
// ephemeral environment and the disk image and starts a SeaBIOS and an
// OVMF VM, which PXE-boot with MACs nobody enrolled, enlist and
// commission with the hardware QEMU gave them; the lab gave each machine
// the qemu power driver, so a deployment of the disk image through the
// API powers its VM on over QMP and ends deployed. SIGINT leaves no
// namespace, tap or QEMU behind. The images are the test binary's builds
// of `rackplane images build-ephemeral` and `build-disk`, put where the
// lab keeps its own, as a second start finds them.
func TestDevLab(t *testing.T) {
	endToEnd(t)
	// Its namespace, addresses and database are its own: it runs beside
	// the other VM tests, holding a VM slot for each of its two VMs.
	t.Parallel()
	pxetest.QEMUs(t, 2)
	began := time.Now()
	dbURL := pgtest.NewDatabase(t)
	eph, disk := buildEphemeral(t), builtDiskImage(t)
	dataDir := filepath.Join(t.TempDir(), "dev")
	for dir, b := range map[string]*built{"ephemeral": eph, "disk": disk} {
		if err := os.MkdirAll(filepath.Join(dataDir, "lab", "images"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(b.Dir, filepath.Join(dataDir, "lab", "images", dir)); err != nil {
			t.Fatal(err)
		}
	}
	apiAddr, natsAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(filepath.Join(binDir, "rackplane"), "dev", "-vms", "2", "-data-dir", dataDir, "-database-url", dbURL,
		"-http-addr", apiAddr, "-nats-addr", natsAddr)
	p := startCmd(t, "rackplane", cmd)
	var ns string
	t.Cleanup(func() {
		// A failed test's lab stops as Ctrl-C stops it; what it left
		// (after a kill) goes as at the next start.
		_ = p.Stop()
		if _, err := lab.CleanStale(dataDir, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Errorf("clean the lab's namespace: %v", err)
		}
		if t.Failed() {
			for _, vm := range []string{"vm1", "vm2"} {
				b, _ := os.ReadFile(filepath.Join(dataDir, "lab", "vms", vm, "serial.log"))
				t.Logf("%s's serial console:\n%s", vm, tail(strings.ReplaceAll(string(b), "\r\n", "\n"), 40))
			}
		}
	})
	eventually(t, 2*time.Minute, "the lab's banner", func() error {
		if !strings.Contains(p.Output(), "The lab is up") {
			return fmt.Errorf("output:\n%s", tail(p.Output(), 20))
		}
		return nil
	})
	out := p.Output()
	up := time.Now()
	t.Logf("the lab was up in %s", time.Since(began).Round(time.Second))
	if m := regexp.MustCompile(`namespace (` + lab.NSPrefix + `\d+)`).FindStringSubmatch(out); m != nil {
		ns = m[1]
	} else {
		t.Fatalf("the lab names no namespace:\n%s", out)
	}
	type vmInfo struct{ name, mac, firmware string }
	var vms []vmInfo
	for _, m := range regexp.MustCompile(`(?m)^  (vm\d+) +([0-9a-f:]{17}) +(bios|uefi) `).FindAllStringSubmatch(out, -1) {
		vms = append(vms, vmInfo{m[1], m[2], m[3]})
	}
	if len(vms) != 2 || vms[0].firmware != "bios" || vms[1].firmware != "uefi" {
		t.Fatalf("the banner's VMs %+v, want vm1 under SeaBIOS and vm2 under UEFI:\n%s", vms, out)
	}
	for _, want := range []string{"kept in " + filepath.Join(dataDir, "lab", "images", "ephemeral"), "imported the disk image",
		"managed on br0 (1 subnets)", "TFTP           10.77.0.1:69", "deploy MACHINE -os ", "serial.log"} {
		if !strings.Contains(out, want) {
			t.Errorf("the lab's output lacks %q", want)
		}
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	// The API on the host's address, as the browser and CLI reach it.
	a := api{t: t, base: "http://" + apiAddr, token: strings.TrimSpace(string(tok))}

	// Both enlist and commission at once, each in its own VM; the BIOS
	// one is deployed as soon as it is ready, while the other may still
	// commission.
	ids := map[string]string{}
	ready := func(vm vmInfo) {
		t.Helper()
		eventually(t, 12*time.Minute, vm.name+" enlisted, commissioned and ready", func() error {
			var list struct {
				Machines []struct{ ID, Status, Origin, StatusReason string }
			}
			a.call("GET", "/api/v1/machines?mac="+vm.mac, nil, nil, &list)
			if len(list.Machines) != 1 || list.Machines[0].Status != "ready" {
				return fmt.Errorf("%s: %+v", vm.name, list.Machines)
			}
			ids[vm.name] = list.Machines[0].ID
			return nil
		})
		t.Logf("%s (%s) was ready %s after the lab was up", vm.name, vm.firmware, time.Since(up).Round(time.Second))
		var hw postgres.Hardware
		if code := a.call("GET", "/api/v1/machines/"+ids[vm.name]+"/hardware", nil, nil, &hw); code != 200 {
			t.Fatalf("%s's hardware: %d", vm.name, code)
		}
		want := events.FirmwareBIOS
		if vm.firmware == "uefi" {
			want = events.FirmwareUEFI
		}
		if hw.Inventory.Firmware.Type != want || hw.Summary.Threads != 2 || hw.Summary.Disks != 1 {
			t.Errorf("%s's hardware: firmware %s, %d threads, %d disks: want %s, 2, 1", vm.name, hw.Inventory.Firmware.Type, hw.Summary.Threads, hw.Summary.Disks, want)
		}
		var pw struct {
			Driver  string `json:"driver"`
			Address string `json:"address"`
		}
		if code := a.call("GET", "/api/v1/machines/"+ids[vm.name]+"/power", nil, nil, &pw); code != 200 || pw.Driver != "qemu" ||
			pw.Address != filepath.Join(dataDir, "lab", "vms", vm.name, "qmp.sock") {
			t.Errorf("%s's power parameters: %d %+v, want qemu and its QMP socket", vm.name, code, pw)
		}
	}
	ready(vms[0])

	// The BIOS one is deployed with the lab's disk image: nothing but
	// the qemu driver turns its VM, off since commissioning, on.
	parts := strings.Split(disk.VersionID, "/")
	var m struct {
		Status         string
		StatusReason   string `json:"status_reason"`
		ImageVersionID string `json:"image_version_id"`
	}
	if code := a.call("POST", "/api/v1/machines/"+ids["vm1"]+"/deploy", nil, map[string]any{"os": parts[0], "release": parts[3]}, &m); code != 200 {
		t.Fatalf("deploy: %d %+v", code, m)
	}
	deploying := time.Now()
	ready(vms[1])
	eventually(t, 10*time.Minute, "vm1 deployed", func() error {
		a.call("GET", "/api/v1/machines/"+ids["vm1"], nil, nil, &m)
		if m.Status != "deployed" {
			return fmt.Errorf("%s (%s)", m.Status, m.StatusReason)
		}
		return nil
	})
	t.Logf("vm1 was deployed in %s", time.Since(deploying).Round(time.Second))
	if m.ImageVersionID != disk.VersionID {
		t.Errorf("vm1 deployed with %s, want %s", m.ImageVersionID, disk.VersionID)
	}

	// The operator asks who has which address: `rackplane leases` by the
	// lab's subnet lists both VMs' leases, each with its machine.
	eventually(t, 2*time.Minute, "both VMs' leases in `rackplane leases`", func() error {
		out, err := exec.Command(filepath.Join(binDir, "rackplane"), "leases", "-subnet", "10.77.0.0/24",
			"-api", "http://"+apiAddr, "-token", a.token).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		for _, vm := range vms {
			if !regexp.MustCompile(`(?m)^10\.77\.0\.\d+\s+` + vm.mac + `\s+[^-\s]\S*\s`).Match(out) {
				return fmt.Errorf("no lease of %s (%s):\n%s", vm.name, vm.mac, out)
			}
		}
		return nil
	})

	// The operator powers vm2, off since it commissioned, on and off
	// again from its page in the web UI; QEMU's own status agrees.
	powerFromTheUI(t, a, ids["vm2"], filepath.Join(dataDir, "lab", "vms", "vm2", "qmp.sock"))

	if err := p.Stop(); err != nil {
		t.Errorf("the lab after SIGINT: %v\n%s", err, tail(p.Output(), 20))
	}
	if !strings.Contains(p.Output(), "deleted namespace "+ns) {
		t.Errorf("the lab did not say it deleted its namespace:\n%s", tail(p.Output(), 10))
	}
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), ns) {
		t.Errorf("namespace %s is left:\n%s", ns, b)
	}
	if b, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(b), "tap1") || strings.Contains(string(b), "tap2") {
		// tap1/tap2 are the lab's names: none of the host's own.
		t.Errorf("a lab tap is on the host:\n%s", b)
	}
	if b, _ := exec.Command("pgrep", "-f", filepath.Join(dataDir, "lab")).Output(); len(b) > 0 {
		t.Errorf("processes of the lab are left: %s", b)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "lab", "vms", "vm1", "disk.raw")); err != nil {
		t.Errorf("the data directory went with the lab: %v", err)
	}
	t.Logf("the test took %s", time.Since(began).Round(time.Second))
}

// powerFromTheUI opens a lab machine's page in headless Chromium, powers
// its VM on and then off (asked first) with the page's buttons, and checks
// each through the VM's QMP socket.
func powerFromTheUI(t *testing.T, a api, id, socket string) {
	t.Helper()
	vmRunning := func(want bool) {
		t.Helper()
		eventually(t, 30*time.Second, fmt.Sprintf("the VM running: %v", want), func() error {
			running, err := qmpStatus(socket)
			if err != nil || running != want {
				return fmt.Errorf("QMP says running %v (%v)", running, err)
			}
			return nil
		})
	}
	vmRunning(false)
	b := newBrowser(t)
	defer b.checkClean()
	power := `//dl[@id="power-details"]/dd[@data-field="power"]`
	b.do("open the machine's page", chromedp.Navigate(a.base+"/#token="+url.QueryEscape(a.token)+"&next=/machines/"+id))
	b.see("Power on offered", `//button[@id="power-on"][not(@disabled)]`)
	b.do("power on", chromedp.Click(chromedp.ID("power-on")))
	b.see("on", power+`[normalize-space()="on"]`)
	vmRunning(true)
	b.screenshot("lab-power-on")
	b.do("power off", chromedp.Click(chromedp.ID("power-off")))
	b.see("the confirmation", `//div[@id="power-confirm"]`)
	b.do("confirm", chromedp.Click(chromedp.ID("power-confirm-yes")))
	b.see("off", power+`[normalize-space()="off"]`)
	vmRunning(false)
}
