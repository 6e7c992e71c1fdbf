package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
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
	vmTest(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:01"})
}

// TestRackdProxyDHCPBootsQEMU is the same boot with dnsmasq as the site's
// DHCP server giving the address, and rackd in proxy mode giving iPXE its
// script in the proxy offer (iPXE boots it without asking on port 4011).
func TestRackdProxyDHCPBootsQEMU(t *testing.T) {
	vmTest(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:02", proxy: true})
}

// TestRackdManagedDHCPBootsUEFI boots a UEFI VM (OVMF, its own PXE client,
// no iPXE ROM): the firmware, arch 7, is given snponly.efi, fetches it
// from rackd over TFTP; iPXE then asks again, as iPXE, and gets the
// rack's script.
func TestRackdManagedDHCPBootsUEFI(t *testing.T) {
	vmTest(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:03", uefi: true})
}

// TestRackdProxyDHCPBootsUEFI is the UEFI boot beside dnsmasq: dnsmasq
// gives OVMF its address only, rackd in proxy mode the boot file
// (snponly.efi) and itself as next-server; iPXE then asks again and gets
// the rack's script in rackd's proxy offer.
func TestRackdProxyDHCPBootsUEFI(t *testing.T) {
	vmTest(t)
	qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:04", proxy: true, uefi: true})
}

// TestSiteDHCPServerBootsFromTheRack keeps the site's DHCP server as the
// only one answering, with rackd's DHCP off: dnsmasq runs with the rules
// docs/boot-networks.md gives operators, read from that page, and a BIOS
// (iPXE ROM) and a UEFI VM (OVMF's PXE, then snponly.efi) boot from the
// rack.
func TestSiteDHCPServerBootsFromTheRack(t *testing.T) {
	vmTest(t)
	t.Run("bios", func(t *testing.T) { qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:06", site: true}) })
	t.Run("uefi", func(t *testing.T) { qemuDHCPBoot(t, vmBoot{mac: "52:54:00:d4:c0:07", site: true, uefi: true}) })
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
	mac := vm.mac
	firmware := []string{"-device", "virtio-net-pci,netdev=n0,mac=" + mac}
	if vm.uefi {
		firmware = pxetest.OVMF(t, mac, pxetest.OVMFOptions{})
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
	rack := newBootRack(t, map[string]events.BootDecision{mac: bootDecision(mac, "dhcp-vm", "rackplane.dhcp=ok")})
	rackd := rack.start(t, rackNS, dhcpFlags...)
	if vm.uefi { // the firmware needs snponly.efi, which rackd imports at start
		eventually(t, 60*time.Second, "snponly.efi over TFTP from rackd", func() error {
			_, err := netnstest.Run(rackNS, "curl", "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+dhcp.FileSNPOnly)
			return err
		})
	}

	qctx, qcancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer qcancel()
	v := startVM(qctx, t, qemu, vmNS, tap, 512, firmware)
	if err := v.wait(); err != nil {
		t.Fatalf("the VM did not boot: %v\n%s\nrackd:\n%s", err, v.report(), tail(rackd.Output(), 40))
	}
	t.Logf("VM booted through rackd's DHCP and powered off after %s", v.took.Round(time.Second))
	if !strings.Contains(v.cmdline(), "rackplane.dhcp=ok") {
		t.Fatalf("the kernel command line lacks the boot decision's parameters:\n%s", tail(v.console(), 20))
	}

	if vm.site {
		return // rackd's DHCP server is off: nothing to report
	}
	// What rackd did went out as a dhcp_leases_changed event, with the
	// script URL: a lease (managed) or boot information (proxy).
	wantFile := "http://10.20.0.2:5248/ipxe/" + bootconfig.Hyphenated(mac) + ".ipxe"
	if vm.uefi {
		waitDHCPChange(t, sub, "an answer to "+mac+" with "+dhcp.FileSNPOnly, func(c events.DHCPLeaseChange) bool {
			if vm.proxy {
				return c.Action == events.DHCPBootOffered && c.MAC == mac && c.BootFile == dhcp.FileSNPOnly
			}
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
