package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// TestCommissionAQEMUVM commissions a QEMU VM under SeaBIOS through a
// regiond and a rackd: the ephemeral environment built from Debian's
// packages is imported into the rack through the API, the VM PXE-boots
// it, its agent reports steps, the inventory and its outcome to the rack
// and powers the VM off. The machine is then ready, and its hardware, as
// the API projects it, is what QEMU was told to give the VM.
func TestCommissionAQEMUVM(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	began := time.Now()
	site := newPXESiteWith(t, true, "ipxe/boot.ipxe")
	a := site.a

	importEphemeral(t, a, site.rackID)

	const mac, mac2 = "52:54:00:7c:00:01", "52:54:00:7c:00:02"
	var m machineRef
	if code := a.call("POST", "/api/v1/machines", nil,
		map[string]any{"hostname": "com1", "macs": []string{mac}, "boot_rack_id": site.rackID}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}
	var com struct {
		Status, Error string
	}
	if code := a.call("POST", "/api/v1/machines/"+m.ID+"/commission", nil, nil, &com); code != 200 || com.Status != "commissioning" {
		t.Fatalf("commission: %d %+v", code, com)
	}

	disks := []vmDisk{{"RP-COM-1", 64 << 20}, {"RP-COM-2", 96 << 20}}
	args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot", "-monitor", "none",
		"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:" + site.tftpPort + "/" + site.bootFile,
		"-device", "e1000,netdev=n0,mac=" + mac,
		"-netdev", "user,id=n1", "-device", "virtio-net-pci,netdev=n1,mac=" + mac2,
		"-boot", "n"}
	dir := t.TempDir()
	args = append(args, diskArgs(t, dir, disks)...)
	log := runVM(t, site.qemu, dir, args, "was commissioned")

	eventually(t, 30*time.Second, "the machine is ready", func() error {
		var got machineRef
		a.call("GET", "/api/v1/machines/"+m.ID, nil, nil, &got)
		if got.Status != "ready" {
			return fmt.Errorf("status %s", got.Status)
		}
		return nil
	})

	var hw postgres.Hardware
	if code := a.call("GET", "/api/v1/machines/"+m.ID+"/hardware", nil, nil, &hw); code != 200 {
		t.Fatalf("hardware: %d", code)
	}
	checkInventory(t, hw.Inventory, vmShape{threads: 2, memory: 1 << 30, disks: disks, bootMAC: mac, otherMAC: mac2, firmware: "bios"}, string(log))

	var evs struct {
		Events []events.Event
	}
	a.call("GET", "/api/v1/events?limit=1000&stream="+url.QueryEscape(events.MachineStreamName(m.ID)), nil, nil, &evs)
	seen := map[string]int{}
	for _, e := range evs.Events {
		seen[e.Type]++
	}
	if seen[events.TypeAgentStepReported] == 0 || seen[events.TypeAgentFinished] != 1 {
		t.Errorf("the machine's events %v lack the agent's steps or its outcome", seen)
	}
	t.Logf("machine events: %v; the test took %s", seen, time.Since(began).Round(time.Second))
}

// buildEphemeral builds the ephemeral environment for amd64 with
// `rackplane images build-ephemeral`, with the package cache
// internal/ephemeral's tests use (so nothing is downloaded twice on one
// machine).
func buildEphemeral(t *testing.T) *built {
	t.Helper()
	return buildImage(t, "build-ephemeral", "-arch", "amd64", "-cache-dir", filepath.Join(os.TempDir(), "rackplane-test-ephemeral"))
}

// importEphemeral builds the ephemeral environment for amd64 and imports
// it into rack rackID through the API, waits until the region can choose
// it for a commissioning, and returns the build.
func importEphemeral(t *testing.T, a api, rackID string) *built {
	t.Helper()
	res := buildEphemeral(t)
	var imp struct{ ID, State string }
	if code := a.call("POST", "/api/v1/racks/"+rackID+"/images/imports", nil, map[string]string{"dir": res.Dir}, &imp); code != 202 {
		t.Fatalf("import the ephemeral environment: %d %+v", code, imp)
	}
	// The region chooses a commission boot's environment from what racks
	// report in their capabilities, as a deployment chooses its image: the
	// rack's listing alone is not enough.
	eventually(t, 60*time.Second, "the ephemeral environment imported and reported", func() error {
		var imgs struct {
			Versions json.RawMessage `json:"versions"`
		}
		a.call("GET", "/api/v1/racks/"+rackID+"/images", nil, nil, &imgs)
		if !strings.Contains(string(imgs.Versions), res.VersionID) {
			return fmt.Errorf("rack images %s", imgs.Versions)
		}
		var oses struct {
			OSes []struct{ OS, Release string }
		}
		a.call("GET", "/api/v1/os", nil, nil, &oses)
		for _, o := range oses.OSes {
			if o.OS == "rackplane" && o.Release == "ephemeral" {
				return nil
			}
		}
		return fmt.Errorf("os registry %+v", oses)
	})
	return res
}

// vmDisk is a virtio disk a test gives a VM.
type vmDisk struct {
	serial string
	size   int64
}

// vmShape is what QEMU was told to give a VM, as its inventory must show.
type vmShape struct {
	threads           int // -smp, one socket: as many cores
	memory            int64
	disks             []vmDisk
	bootMAC, otherMAC string
	firmware          string // bios or uefi
}

// checkInventory fails the test where inv is not what QEMU gave the VM,
// with the VM's console's end.
func checkInventory(t *testing.T, inv events.Inventory, want vmShape, console string) {
	t.Helper()
	b, _ := json.Marshal(inv)
	t.Logf("inventory: %s", b)
	fail := func(format string, v ...any) {
		t.Helper()
		t.Errorf(format+"\ninventory: %s\nserial:\n%s", append(v, b, tail(console, 40))...)
	}
	if inv.CPU.Threads != want.threads || inv.CPU.Cores != want.threads {
		fail("cpu %+v, want %d threads and cores (-smp)", inv.CPU, want.threads)
	}
	mem := inv.Memory.InstalledBytes
	if d := mem - want.memory; d < -want.memory/20 || d > want.memory/20 {
		fail("installed memory %d (%s), want %d within 5%%", mem, inv.Memory.InstalledSource, want.memory)
	}
	for _, wd := range want.disks {
		found := false
		for _, d := range inv.Disks {
			if d.Serial == wd.serial {
				found = true
				if d.SizeBytes != wd.size {
					fail("disk %s is %d bytes, want %d", wd.serial, d.SizeBytes, wd.size)
				}
			}
		}
		if !found {
			fail("no disk with serial %s", wd.serial)
		}
	}
	if len(inv.Disks) != len(want.disks) {
		fail("%d disks, want %d", len(inv.Disks), len(want.disks))
	}
	nics := map[string]bool{}
	for _, n := range inv.NICs {
		nics[n.MAC] = n.Boot
	}
	if boot, ok := nics[want.bootMAC]; !ok || !boot || len(nics) != 2 {
		fail("NICs %v, want %s (booted) and %s", nics, want.bootMAC, want.otherMAC)
	}
	if boot, ok := nics[want.otherMAC]; !ok || boot {
		fail("NICs %v, want %s present and not booted", nics, want.otherMAC)
	}
	if inv.Firmware.Type != want.firmware {
		fail("firmware %q, want %s", inv.Firmware.Type, want.firmware)
	}
	if inv.DMI.Vendor != "QEMU" {
		fail("DMI vendor %q, want QEMU", inv.DMI.Vendor)
	}
}

// diskArgs makes an empty image file in dir for each disk and returns
// QEMU's arguments attaching them as virtio disks with their serials.
func diskArgs(t *testing.T, dir string, disks []vmDisk) []string {
	t.Helper()
	var args []string
	for i, d := range disks {
		p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, d.size); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("d%d", i)
		args = append(args, "-drive", "file="+p+",if=none,id="+id+",format=raw",
			"-device", "virtio-blk-pci,drive="+id+",serial="+d.serial)
	}
	return args
}

// runVM runs QEMU with args and a serial console in dir until the VM
// powers off (5 minutes at most), logs how long it took to do what did
// says, and returns the console.
func runVM(t *testing.T, qemu, dir string, args []string, did string) []byte {
	t.Helper()
	serial := filepath.Join(dir, "serial.log")
	args = append(args, "-serial", "file:"+serial)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	booted := time.Now()
	out, err := exec.CommandContext(ctx, qemu, args...).CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("qemu (did the VM power off within 5m?): %v\n%s\nserial:\n%s", err, out, tail(string(log), 80))
	}
	t.Logf("the VM booted, %s and powered off in %s", did, time.Since(booted).Round(time.Second))
	return log
}
