package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/dhcp"
)

const qemuBootMarker = "RACKPLANE-DHCP-BOOTED"

// TestRackdManagedDHCPBootsQEMU boots a QEMU VM whose only way to boot is
// the network: its firmware's iPXE gets an address from rackd in managed
// DHCP mode and, being iPXE, the URL of the rack's iPXE script for its
// MAC; the script, rendered from the boot decision the rack has cached,
// loads kernel and initrd over HTTP, and the initramfs reports on the
// serial console. rackd, the VM (on a tap device) and the bridge between
// them live in network namespaces of the test.
func TestRackdManagedDHCPBootsQEMU(t *testing.T) {
	endToEnd(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:01"})
}

// TestRackdProxyDHCPBootsQEMU is the same boot with dnsmasq as the site's
// DHCP server giving the address, and rackd in proxy mode giving iPXE its
// script in the proxy offer (iPXE boots it without asking on port 4011).
func TestRackdProxyDHCPBootsQEMU(t *testing.T) {
	endToEnd(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:02", proxy: true})
}

// TestRackdManagedDHCPBootsUEFI boots a UEFI VM (OVMF, its own PXE client,
// no iPXE ROM): the firmware, arch 7, is given snponly.efi, fetches it
// from rackd over TFTP; iPXE then asks again, as iPXE, and gets the
// rack's script.
func TestRackdManagedDHCPBootsUEFI(t *testing.T) {
	endToEnd(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:03", uefi: true})
}

// TestSiteDHCPServerBootsFromTheRack keeps the site's DHCP server as the
// only one answering, with rackd's DHCP off: dnsmasq runs with the rules
// docs/boot-networks.md gives operators, read from that page, and a BIOS
// (iPXE ROM) and a UEFI VM (OVMF's PXE, then snponly.efi) boot from the
// rack.
func TestSiteDHCPServerBootsFromTheRack(t *testing.T) {
	endToEnd(t)
	t.Run("bios", func(t *testing.T) { qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:04", site: true}) })
	t.Run("uefi", func(t *testing.T) { qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:05", site: true, uefi: true}) })
}

type vmBoot struct {
	mac   string
	proxy bool // dnsmasq gives the address, rackd is in proxy mode
	site  bool // dnsmasq gives address and boot file (the documented rules), rackd's DHCP is off
	uefi  bool // OVMF's own PXE, not QEMU's iPXE ROM
}

// documentedDnsmasqRules returns the dnsmasq rules of
// docs/boot-networks.md, written for a rack at 10.20.0.2.
func documentedDnsmasqRules(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/boot-networks.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "**dnsmasq**\n\n```\n")
	rules, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.Contains(rules, "10.20.0.2") {
		t.Fatalf("docs/boot-networks.md has no dnsmasq block for a rack at 10.20.0.2")
	}
	path := filepath.Join(t.TempDir(), "dnsmasq-rules.conf")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func qemuDHCPBoot(t *testing.T, vm vmBoot) {
	qemu := pxetest.QEMU(t)
	kernel := pxetest.Kernel(t)
	initrd := pxetest.Initramfs(t, `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo `+qemuBootMarker+`
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
`, nil)
	mac := vm.mac
	firmware := []string{"-device", "virtio-net-pci,netdev=n0,mac=" + mac}
	if vm.uefi {
		firmware = ovmf(t, mac)
	}
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	vmNS, tap := seg.Tap()
	dhcpFlags := []string{"-dhcp-mode", "managed", "-dhcp-subnets", subnetsFile(t)}
	switch {
	case vm.proxy:
		startDnsmasq(t, seg.Host("site", "02:00:00:00:00:01", "10.20.0.1/24"))
		dhcpFlags = []string{"-dhcp-mode", "proxy"}
	case vm.site:
		startDnsmasq(t, seg.Host("site", "02:00:00:00:00:01", "10.20.0.1/24"), "--conf-file="+documentedDnsmasqRules(t))
		dhcpFlags = []string{"-dhcp-mode", "off"}
	}
	dhcpFlags = append(dhcpFlags, fmt.Sprintf("-import-system-bootloaders=%v", vm.uefi))

	sub := natsForRack(t, rackNS)

	// The rack has the machine's boot decision cached (as from the region)
	// and its kernel and initrd in the fallback boot root.
	dataDir, bootRoot := t.TempDir(), t.TempDir()
	var err error
	d := events.BootDecision{MAC: mac, MachineID: "dhcp-vm", Purpose: events.BootPurposeInstall, Arch: "amd64",
		Kernel: "pxe/vmlinuz", Initrd: "pxe/initrd.gz", Params: []string{"console=ttyS0", "panic=-1", "rackplane.dhcp=ok"}}
	writeJSON(t, filepath.Join(dataDir, bootconfig.CacheFile), map[string]any{"stream_seq": 0, "decisions": map[string]any{mac: d}})
	kb, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bootRoot, "pxe"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"vmlinuz": kb, "initrd.gz": initrd} {
		if err := os.WriteFile(filepath.Join(bootRoot, "pxe", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rackd := startCmd(t, "rackd", exec.Command("ip", append([]string{"netns", "exec", rackNS, filepath.Join(binDir, "rackd"),
		"-name", "dhcp-rack", "-data-dir", dataDir, "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-boot-url", "http://10.20.0.2:5248", "-tftp-addr", ":69", "-boot-root", bootRoot,
		"-dhcp-interface", "eth0", "-dhcp-event-interval", "200ms", "-log-level", "debug"},
		dhcpFlags...)...))
	eventually(t, 20*time.Second, "rackd's DHCP server", func() error {
		if !vm.site && !strings.Contains(rackd.Output(), "dhcp listening") {
			return os.ErrNotExist
		}
		return nil
	})
	if vm.uefi { // the firmware needs snponly.efi, which rackd imports at start
		eventually(t, 60*time.Second, "snponly.efi over TFTP from rackd", func() error {
			_, err := netnstest.Run(rackNS, "curl", "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+dhcp.FileSNPOnly)
			return err
		})
	}

	serial := filepath.Join(t.TempDir(), "serial.log")
	qctx, qcancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer qcancel()
	cmd := exec.CommandContext(qctx, "ip", append([]string{"netns", "exec", vmNS},
		append([]string{qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none", "-serial", "file:" + serial,
			"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no", "-boot", "n"}, firmware...)...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	console, _ := os.ReadFile(serial)
	if err != nil || !strings.Contains(string(console), qemuBootMarker) {
		t.Fatalf("the VM did not boot (%v after %s)\nqemu:\n%s\nserial:\n%s\nrackd:\n%s", err, time.Since(start).Round(time.Second),
			tail(string(out), 20), tail(string(console), 40), tail(rackd.Output(), 40))
	}
	t.Logf("VM booted through rackd's DHCP and powered off after %s", time.Since(start).Round(time.Second))
	if !strings.Contains(string(console), "rackplane.dhcp=ok") {
		t.Fatalf("the kernel command line lacks the boot decision's parameters:\n%s", tail(string(console), 20))
	}

	if vm.site {
		return // rackd's DHCP server is off: nothing to report
	}
	// What rackd did went out as a dhcp_leases_changed event, with the
	// script URL: a lease (managed) or boot information (proxy).
	wantFile := "http://10.20.0.2:5248/ipxe/" + bootconfig.Hyphenated(mac) + ".ipxe"
	if vm.uefi {
		waitDHCPChange(t, sub, "a lease of "+mac+" with "+dhcp.FileSNPOnly, func(c events.DHCPLeaseChange) bool {
			return c.Action == events.DHCPAcked && c.MAC == mac && c.BootFile == dhcp.FileSNPOnly
		})
	}
	waitDHCPChange(t, sub, "an answer to "+mac+" with "+wantFile, func(c events.DHCPLeaseChange) bool {
		if vm.proxy {
			return c.Action == events.DHCPBootOffered && c.MAC == mac && c.BootFile == wantFile
		}
		return c.Action == events.DHCPAcked && c.MAC == mac && c.BootFile == wantFile && strings.HasPrefix(c.IP, "10.20.0.1")
	})
}

// ovmf returns QEMU's arguments for a UEFI VM whose NIC has no option
// ROM, so that the firmware's own network stack does the PXE boot.
func ovmf(t *testing.T, mac string) []string {
	t.Helper()
	return uefiFirmware(t, firmwarePath{mac: mac})
}

// subnetsFile writes rackd's -dhcp-subnets file: 10.20.0.0/24, addresses
// .100 to .120.
func subnetsFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "subnets.json")
	writeJSON(t, path, []map[string]any{{"cidr": "10.20.0.0/24", "router": "10.20.0.2",
		"ranges": []map[string]string{{"start": "10.20.0.100", "end": "10.20.0.120"}}}})
	return path
}

// startDnsmasq runs dnsmasq in namespace ns as the site's DHCP server:
// addresses .150 to .170 of 10.20.0.0/24, and no boot options unless
// extra gives some.
func startDnsmasq(t *testing.T, ns string, extra ...string) {
	t.Helper()
	dnsmasq := netnstest.Need(t, "dnsmasq", "dnsmasq-base")
	dir := t.TempDir()
	_, log := netnstest.Start(t, ns, append([]string{dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root", "--no-ping",
		"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.20.0.150,10.20.0.170,255.255.255.0,1h",
		"--dhcp-leasefile=" + filepath.Join(dir, "leases"), "--log-dhcp", "--log-facility=-"}, extra...)...)
	if !netnstest.WaitFor(10*time.Second, func() bool { return strings.Contains(log.String(), "DHCP, IP range") }) {
		t.Fatalf("dnsmasq did not start:\n%s", log)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", tail(log.String(), 40))
		}
	})
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
