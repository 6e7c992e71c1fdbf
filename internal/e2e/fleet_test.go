package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/dhcp"
)

// fleetFirmware is a kind of machine in the fleet: its firmware and NIC.
type fleetFirmware struct {
	name string
	mem  int // MiB
	// args are QEMU's arguments for the firmware and the NIC (netdev n0).
	args func(t *testing.T, mac string) []string
	// loader is the file the firmware fetches from the rack over TFTP
	// before iPXE runs ("" when the firmware is iPXE already).
	loader string
}

// fleetFirmwares are the kinds of machine the fleet test boots, in turn.
var fleetFirmwares = []fleetFirmware{
	// SeaBIOS with QEMU's iPXE ROM of virtio-net: iPXE asks DHCP itself.
	{"bios-ipxe-virtio", 256, func(_ *testing.T, mac string) []string {
		return []string{"-device", "virtio-net-pci,netdev=n0,mac=" + mac}
	}, ""},
	// OVMF's own PXE (no option ROM): TFTP of snponly.efi, then iPXE.
	{"uefi-pxe-snponly", 384, func(t *testing.T, mac string) []string { return pxetest.OVMF(t, mac, pxetest.OVMFOptions{}) }, dhcp.FileSNPOnly},
	// SeaBIOS with QEMU's iPXE ROM of the e1000.
	{"bios-ipxe-e1000", 256, func(_ *testing.T, mac string) []string {
		return []string{"-device", "e1000,netdev=n0,mac=" + mac}
	}, ""},
	// OVMF with QEMU's iPXE ROM of virtio-net (its EFI half): UEFI iPXE.
	{"uefi-ipxe-rom", 384, func(t *testing.T, mac string) []string {
		return pxetest.OVMF(t, mac, pxetest.OVMFOptions{IPXEROM: true})
	}, ""},
}

// TestFleetBootsAtOnce boots a fleet of VMs of mixed firmware (the kinds
// of fleetFirmwares in turn) at the same time through one rackd in
// managed DHCP mode, all on one bridge: every VM must boot its own
// decision's kernel command line (rackplane.vm=<n>), with an address no
// other VM has, and the rack must report no failed transfer, in its
// boot_transfer events and in rackplane_boot_transfers_total. There are
// 10 VMs, or $RACKPLANE_FLEET_VMS.
func TestFleetBootsAtOnce(t *testing.T) {
	endToEnd(t)
	qemu := pxetest.QEMU(t)
	curl := netnstest.Need(t, "curl", "curl")
	n := 10
	if s := os.Getenv("RACKPLANE_FLEET_VMS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 || n > 90 {
			t.Fatalf("RACKPLANE_FLEET_VMS=%q: want 1 to 90", s)
		}
	}
	type member struct {
		n        int
		mac, id  string
		firmware fleetFirmware
		vm       *qemuVM
	}
	fleet := make([]*member, n)
	decisions := map[string]events.BootDecision{}
	for i := range fleet {
		m := &member{n: i, mac: fmt.Sprintf("52:54:00:f1:00:%02x", i), id: fmt.Sprintf("fleet-vm-%d", i),
			firmware: fleetFirmwares[i%len(fleetFirmwares)]}
		fleet[i] = m
		decisions[m.mac] = bootDecision(m.mac, m.id, "rackplane.vm="+strconv.Itoa(i))
	}

	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	subnets := filepath.Join(t.TempDir(), "subnets.json")
	writeJSON(t, subnets, []map[string]any{{"cidr": "10.20.0.0/24", "router": "10.20.0.2",
		"ranges": []map[string]string{{"start": "10.20.0.100", "end": "10.20.0.199"}}}})
	rec := collectEvents(t, natsForRack(t, rackNS))
	rack := newBootRack(t, decisions)
	rackd := rack.start(t, rackNS, "-dhcp-mode", "managed", "-dhcp-subnets", subnets, "-import-system-bootloaders=true")
	eventually(t, 60*time.Second, dhcp.FileSNPOnly+" over TFTP from rackd", func() error {
		_, err := netnstest.Run(rackNS, curl, "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+dhcp.FileSNPOnly)
		return err
	})

	// The whole fleet boots within 12 minutes on two cores; a VM still
	// running then is killed, and fails.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	start := time.Now()
	for _, m := range fleet {
		ns, tap := seg.Tap()
		m.vm = startVM(ctx, t, qemu, ns, tap, m.firmware.mem, m.firmware.args(t, m.mac))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, m := range fleet {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = m.vm.wait() }()
	}
	wg.Wait()
	wall := time.Since(start)

	var took []time.Duration
	for i, m := range fleet {
		if errs[i] != nil {
			t.Errorf("VM %d (%s, %s) did not boot: %v\n%s", m.n, m.firmware.name, m.mac, errs[i], m.vm.report())
			continue
		}
		took = append(took, m.vm.took)
		if !slices.Contains(strings.Fields(m.vm.cmdline()), "rackplane.vm="+strconv.Itoa(m.n)) {
			t.Errorf("VM %d (%s) booted the command line %q, not its own", m.n, m.firmware.name, m.vm.cmdline())
		}
	}
	if t.Failed() {
		t.Fatalf("rackd:\n%s", tail(rackd.Output(), 60))
	}

	// Every VM has an address of its own: the last one acknowledged to
	// its MAC.
	netnstest.WaitFor(10*time.Second, func() bool {
		acked := map[string]bool{}
		for _, c := range rec.leaseChanges(t) {
			if c.Action == events.DHCPAcked {
				acked[c.MAC] = true
			}
		}
		return len(acked) >= n
	})
	lease := map[string]string{}
	for _, c := range rec.leaseChanges(t) {
		if c.Action == events.DHCPAcked {
			lease[c.MAC] = c.IP
		}
	}
	holder := map[string]int{}
	for _, m := range fleet {
		ip, ok := lease[m.mac]
		if !ok {
			t.Errorf("VM %d (%s): no lease acknowledged", m.n, m.mac)
			continue
		}
		if other, dup := holder[ip]; dup {
			t.Errorf("VMs %d and %d both have %s", other, m.n, ip)
		}
		holder[ip] = m.n
	}
	wantScript := func(m *member) string {
		return "http://10.20.0.2:5248/ipxe/" + bootconfig.Hyphenated(m.mac) + ".ipxe"
	}
	for _, m := range fleet {
		found := false
		for _, c := range rec.leaseChanges(t) {
			found = found || c.Action == events.DHCPAcked && c.MAC == m.mac && c.BootFile == wantScript(m)
		}
		if !found {
			t.Errorf("VM %d (%s): no lease with its script %s", m.n, m.firmware.name, wantScript(m))
		}
	}

	// Every VM's kernel and initrd went out whole, and its loader if it
	// fetched one (to its address: the rack knows no machine by a
	// loader's request); no transfer failed.
	wantFiles := func(m *member) []string {
		files := []string{"pxe/vmlinuz", "pxe/initrd.gz"}
		if m.firmware.loader != "" {
			files = append(files, m.firmware.loader)
		}
		return files
	}
	complete := func(m *member, file string) bool {
		for _, bt := range rec.transfers(t) {
			host, _, _ := strings.Cut(bt.Remote, ":")
			if bt.Error == "" && bt.Bytes == bt.Size && (bt.Path == file || bt.FileName == file) &&
				(bt.MachineID == m.id || host == lease[m.mac]) {
				return true
			}
		}
		return false
	}
	netnstest.WaitFor(30*time.Second, func() bool {
		for _, m := range fleet {
			for _, f := range wantFiles(m) {
				if !complete(m, f) {
					return false
				}
			}
		}
		return true
	})
	for _, m := range fleet {
		for _, f := range wantFiles(m) {
			if !complete(m, f) {
				t.Errorf("VM %d (%s): no complete transfer of %s", m.n, m.firmware.name, f)
			}
		}
	}
	transfers := rec.transfers(t)
	failed := 0
	for _, bt := range transfers {
		if bt.Error != "" {
			failed++
			t.Errorf("failed transfer: %s %s to %s: %s", bt.Protocol, bt.FileName, bt.Remote, bt.Error)
		}
	}
	metrics, err := netnstest.Run(rackNS, curl, "-sS", "--max-time", "5", "http://127.0.0.1:5248/metrics")
	if err != nil {
		t.Fatalf("rackd's metrics: %v %s", err, metrics)
	}
	for _, l := range strings.Split(string(metrics), "\n") {
		if strings.HasPrefix(l, "rackplane_boot_transfers_total{") && strings.Contains(l, `result="error"`) && !strings.HasSuffix(l, " 0") {
			t.Errorf("rackd counted failed transfers: %s", l)
		}
	}

	slices.Sort(took)
	if len(took) > 0 {
		t.Logf("%d VMs (%d kinds) booted at once in %s; per VM min %s, median %s, max %s; %d transfers, %d failed",
			n, min(n, len(fleetFirmwares)), wall.Round(time.Second), took[0].Round(time.Second),
			took[len(took)/2].Round(time.Second), took[len(took)-1].Round(time.Second), len(transfers), failed)
	}
}
