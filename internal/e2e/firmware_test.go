package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/dhcp"
)

// The firmware paths of an amd64 machine, each booted by a QEMU VM from
// rackd, the only DHCP and TFTP server of a namespaced segment (managed
// mode), into an initramfs that prints its kernel command line and
// fetches the preseed URL on it. The VM has two NICs: a virtio-net one the
// firmware boots from, and an e1000 one without option ROM that the
// initramfs (Debian's e1000 module, signed) brings up.

// TestFirmwareBIOSPXELinux: SeaBIOS runs QEMU's iPXE ROM, which asks as
// iPXE; with the BIOS loader pxelinux the rack answers pxelinux.0, which
// loads its ldlinux.c32 and pxelinux.cfg/01-<mac> from the same
// pxelinux version, then kernel and initrd over TFTP.
func TestFirmwareBIOSPXELinux(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:      "52:54:00:f1:00:01",
		flags:    []string{"-dhcp-bios-loader", "pxelinux"},
		bootFile: dhcp.FilePXELinux,
		needs:    map[string]string{"/usr/lib/PXELINUX/pxelinux.0": "pxelinux", "/usr/lib/syslinux/modules/bios/ldlinux.c32": "syslinux-common"},
		served:   []string{"ldlinux.c32", "pxelinux.cfg/01-52-54-00-f1-00-01"},
		kernelOn: events.BootProtocolTFTP,
	})
}

// TestFirmwareBIOSLPXELinux: with the BIOS loader lpxelinux the rack
// answers lpxelinux.0 and, in option 210, its HTTP server as the path
// prefix: ldlinux.c32, the config, kernel and initrd come over HTTP.
func TestFirmwareBIOSLPXELinux(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:      "52:54:00:f1:00:06",
		flags:    []string{"-dhcp-bios-loader", "lpxelinux"},
		bootFile: dhcp.FileLPXELinux,
		needs:    map[string]string{"/usr/lib/PXELINUX/lpxelinux.0": "pxelinux", "/usr/lib/syslinux/modules/bios/ldlinux.c32": "syslinux-common"},
		served:   []string{"ldlinux.c32", "pxelinux.cfg/01-52-54-00-f1-00-06"},
		kernelOn: events.BootProtocolHTTP,
	})
}

// TestFirmwareUEFIPXEGRUB: OVMF's own PXE client (arch 7) gets
// grubx64.efi (Debian's signed network image) over TFTP; GRUB reads the
// generic grub/grub.cfg, which chains to grub/grub.cfg-<mac>. That config
// loads GRUB's http module (which the rack imports from grub-efi-amd64-bin
// beside the signed image, which has none) and takes kernel and initrd
// from the rack's HTTP server.
func TestFirmwareUEFIPXEGRUB(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:      "52:54:00:f1:00:02",
		flags:    []string{"-dhcp-uefi-loader", "grub"},
		uefi:     true,
		bootFile: dhcp.FileGRUBx64,
		needs:    map[string]string{grubSigned: "grub-efi-amd64-signed"},
		served:   []string{"grub/grub.cfg", "grub/grub.cfg-52:54:00:f1:00:02", "grub/x86_64-efi/http.mod"},
		kernelOn: events.BootProtocolHTTP,
	})
}

// TestFirmwareSecureBoot: OVMF with Microsoft's keys enrolled and Secure
// Boot on gets shim (bootx64.efi, signed by Microsoft), which loads
// Debian's signed GRUB from the same TFTP directory; GRUB, which loads no
// module under Secure Boot, takes Debian's signed kernel over TFTP, and
// the kernel reports Secure Boot on.
func TestFirmwareSecureBoot(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:        "52:54:00:f1:00:03",
		flags:      []string{"-dhcp-uefi-loader", "shim"},
		uefi:       true,
		secureBoot: true,
		bootFile:   dhcp.FileShimx64,
		needs:      map[string]string{grubSigned: "grub-efi-amd64-signed", "/usr/lib/shim/shimx64.efi.signed": "shim-signed", "/usr/share/OVMF/OVMF_CODE_4M.ms.fd": "ovmf"},
		served:     []string{dhcp.FileGRUBx64, "grub/grub.cfg", "grub/grub.cfg-52:54:00:f1:00:03"},
		kernelOn:   events.BootProtocolTFTP,
	})
}

// TestFirmwareUEFIHTTPBoot: OVMF's HTTP boot client (option 60
// HTTPClient, arch 16; its PXE turned off) gets the URL of snponly.efi,
// which asks again as iPXE and gets the rack's script: kernel and
// initrd over HTTP.
func TestFirmwareUEFIHTTPBoot(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:      "52:54:00:f1:00:04",
		uefi:     true,
		httpBoot: true,
		bootFile: "http://10.20.0.2:5248/" + dhcp.FileSNPOnly,
		needs:    map[string]string{"/usr/lib/ipxe/snponly.efi": "ipxe"},
		served:   []string{"ipxe/52-54-00-f1-00-04.ipxe"},
		kernelOn: events.BootProtocolHTTP,
	})
}

// TestFirmwareUEFIIPXE: OVMF's PXE client gets snponly.efi over TFTP,
// iPXE asks again and gets the rack's script.
func TestFirmwareUEFIIPXE(t *testing.T) {
	vmTest(t)
	firmwareBoot(t, firmwarePath{
		mac:      "52:54:00:f1:00:05",
		uefi:     true,
		bootFile: dhcp.FileSNPOnly,
		needs:    map[string]string{"/usr/lib/ipxe/snponly.efi": "ipxe"},
		served:   []string{"ipxe/52-54-00-f1-00-05.ipxe"},
		kernelOn: events.BootProtocolHTTP,
	})
}

// grubSigned is Debian's signed GRUB network image, the rack's grubx64.efi.
const grubSigned = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"

type firmwarePath struct {
	mac        string
	flags      []string // rackd's loader flags
	uefi       bool     // OVMF, else SeaBIOS with QEMU's iPXE ROM
	secureBoot bool     // OVMF with Microsoft's keys, Secure Boot on
	httpBoot   bool     // OVMF's PXE off: it HTTP-boots
	// bootFile is what the rack's first DHCP answer to the firmware gives.
	bootFile string
	// needs are files the path boots, from the Debian package named.
	needs map[string]string
	// served are names the rack must have handed out on the way.
	served []string
	// rootFiles are copied into the rack's boot root: name -> path here.
	rootFiles map[string]string
	// kernelOn is the protocol the kernel and initrd must come over.
	kernelOn string
}

func firmwareBoot(t *testing.T, fw firmwarePath) {
	qemu := pxetest.QEMU(t)
	for path, pkg := range fw.needs {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s missing: install the Debian package %s", path, pkg)
		}
	}
	kernel, err := os.ReadFile(pxetest.Kernel(t))
	if err != nil {
		t.Fatal(err)
	}
	initrd := pxetest.Initramfs(t, vmInit, map[string][]byte{"e1000.ko": pxetest.E1000(t)})
	nonce := make([]byte, 8)
	rand.Read(nonce)
	mark := hex.EncodeToString(nonce)

	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	vmNS, bootTap := seg.Tap()
	_, initTap := seg.Tap()
	sub := natsForRack(t, rackNS)
	evs := collectEvents(t, sub)

	// The rack has the machine's boot decision cached (as from the
	// region), and kernel, initrd and the preseed in its boot root.
	dataDir, bootRoot := t.TempDir(), t.TempDir()
	preseed := "#cloud-config\n# firmware path " + t.Name() + " " + mark
	d := events.BootDecision{MAC: fw.mac, MachineID: "fw-vm", Purpose: events.BootPurposeInstall, Arch: "amd64",
		Kernel: "pxe/vmlinuz", Initrd: "pxe/initrd.gz", Params: []string{"console=ttyS0", "panic=-1", "rackplane.mark=" + mark},
		PreseedURL: "http://10.20.0.2:5248/seeds/" + mark + ".cfg"}
	writeJSON(t, filepath.Join(dataDir, bootconfig.CacheFile), map[string]any{"stream_seq": 0, "decisions": map[string]any{fw.mac: d}})
	files := map[string][]byte{"pxe/vmlinuz": kernel, "pxe/initrd.gz": initrd, "seeds/" + mark + ".cfg": []byte(preseed + "\n")}
	for name, from := range fw.rootFiles {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatalf("%s: install the Debian package that has it (%v)", from, err)
		}
		files[name] = b
	}
	for name, b := range files {
		p := filepath.Join(bootRoot, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rackd := startCmd(t, "rackd", exec.Command("ip", append([]string{"netns", "exec", rackNS, filepath.Join(binDir, "rackd"),
		"-name", "fw-rack", "-data-dir", dataDir, "-insecure-nats", "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-boot-url", "http://10.20.0.2:5248", "-tftp-addr", ":69", "-boot-root", bootRoot,
		"-dhcp-interface", "eth0", "-dhcp-event-interval", "200ms", "-log-level", "debug",
		"-dhcp-mode", "managed", "-dhcp-subnets", subnetsFile(t), "-import-system-bootloaders=true"}, fw.flags...)...))
	eventually(t, 20*time.Second, "rackd's DHCP server", func() error {
		if !strings.Contains(rackd.Output(), "dhcp listening") {
			return os.ErrNotExist
		}
		return nil
	})
	// The loaders are imported at start; the VM must not ask before.
	loader := fw.bootFile[strings.LastIndexByte(fw.bootFile, '/')+1:]
	eventually(t, 60*time.Second, loader+" over TFTP from rackd", func() error {
		_, err := netnstest.Run(rackNS, "curl", "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+loader)
		return err
	})

	args := []string{qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
		"-netdev", "tap,id=n0,ifname=" + bootTap + ",script=no,downscript=no",
		"-netdev", "tap,id=n1,ifname=" + initTap + ",script=no,downscript=no",
		"-device", "e1000,netdev=n1,romfile=,mac=" + initMAC(fw.mac)}
	if fw.uefi {
		args = append(args, uefiFirmware(t, fw)...)
	} else {
		args = append(args, "-device", "virtio-net-pci,netdev=n0,bootindex=1,mac="+fw.mac)
	}
	serial := filepath.Join(t.TempDir(), "serial.log")
	args = append(args, "-serial", "file:"+serial)
	qctx, qcancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer qcancel()
	start := time.Now()
	out, err := exec.CommandContext(qctx, "ip", append([]string{"netns", "exec", vmNS}, args...)...).CombinedOutput()
	b, _ := os.ReadFile(serial)
	console := strings.ReplaceAll(string(b), "\r\n", "\n")
	if err != nil || !strings.Contains(console, "PRESEED-END") {
		t.Fatalf("the VM did not boot to its initramfs (%v after %s)\nqemu:\n%s\nserial:\n%s\nrack's hand-offs:\n%s\nrackd:\n%s",
			err, time.Since(start).Round(time.Second), tail(string(out), 20), tail(console, 60), evs.handoffs(), tail(rackd.Output(), 40))
	}
	t.Logf("%s booted to its initramfs and powered off after %s", fw.mac, time.Since(start).Round(time.Second))

	// The kernel command line carries the decision's parameters, and the
	// preseed URL on it was fetched.
	if !strings.Contains(console, "rackplane.mark="+mark) || !strings.Contains(console, "url="+d.PreseedURL) {
		t.Fatalf("the kernel command line lacks the boot decision's parameters:\n%s", tail(console, 30))
	}
	if got := preseedOf(t, console); got != preseed {
		t.Fatalf("the VM fetched preseed %q, want %q", got, preseed)
	}
	if fw.secureBoot && !strings.Contains(console, "Secure boot enabled") {
		t.Fatalf("the kernel does not report Secure Boot on:\n%s", grepLines(console, "ecure"))
	}

	// The rack's events tell the same story: the firmware's DHCP answer,
	// what was handed out on the way, kernel and initrd over the expected
	// protocol, the preseed over HTTP.
	evs.wait(t, "a DHCP answer to "+fw.mac+" with "+fw.bootFile, func(e events.Event) bool {
		var c events.DHCPLeasesChanged
		if e.Type != events.TypeDHCPLeasesChanged || e.DecodeData(&c) != nil {
			return false
		}
		for _, ch := range c.Changes {
			if ch.MAC == fw.mac && ch.BootFile == fw.bootFile && (ch.Action == events.DHCPAcked || ch.Action == events.DHCPOffered) {
				return true
			}
		}
		return false
	})
	// Only the VM's requests count (from the DHCP range 10.20.0.100-120),
	// not the test's own probe of the loader.
	fromVM := func(remote string) bool { return strings.HasPrefix(remote, "10.20.0.1") }
	// A loader that starts what it fetched may shut its NIC down before
	// the ACK of the last block leaves (seen with pxelinux under load):
	// the rack then reports every byte sent and the last ACK missing,
	// which for a VM that booted is the whole file delivered.
	transferred := func(name, protocol string) {
		evs.wait(t, name+" sent to the VM over "+protocol, func(e events.Event) bool {
			var tr events.BootTransfer
			return e.Type == events.TypeBootTransfer && e.DecodeData(&tr) == nil && tr.Bytes == tr.Size &&
				(tr.Error == "" || strings.Contains(tr.Error, tftp.ErrLastUnacknowledged.Error())) &&
				tr.Protocol == protocol && strings.TrimPrefix(tr.FileName, "/") == name && fromVM(tr.Remote)
		})
	}
	loaderOn := events.BootProtocolTFTP
	if fw.httpBoot {
		loaderOn = events.BootProtocolHTTP
	}
	transferred(loader, loaderOn)
	for _, name := range fw.served {
		evs.wait(t, name+" handed out to the VM", func(e events.Event) bool {
			var h events.BootHandoff
			return e.Type == events.TypeBootHandoff && e.DecodeData(&h) == nil && h.Reason == "" &&
				strings.TrimPrefix(h.FileName, "/") == name && fromVM(h.Remote)
		})
	}
	transferred("pxe/vmlinuz", fw.kernelOn)
	transferred("pxe/initrd.gz", fw.kernelOn)
	transferred("seeds/"+mark+".cfg", events.BootProtocolHTTP)
	t.Logf("the rack's hand-offs and transfers:\n%s", evs.handoffs())
}

// initMAC is the MAC of the VM's second NIC, the initramfs's.
func initMAC(mac string) string { return mac[:len(mac)-2] + "ff" }

// uefiFirmware returns QEMU's arguments for OVMF booting from the
// virtio-net NIC with the firmware's own network stack (no option ROM).
func uefiFirmware(t *testing.T, fw firmwarePath) []string {
	t.Helper()
	return pxetest.OVMF(t, fw.mac, pxetest.OVMFOptions{SecureBoot: fw.secureBoot, HTTPBoot: fw.httpBoot})
}

// wait waits up to 30s for an event that match accepts.
func (l *rackEvents) wait(t *testing.T, what string, match func(events.Event) bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		l.mu.Lock()
		for _, e := range l.events {
			if match(e) {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
	}
	t.Fatalf("no event of the rack with %s; hand-offs:\n%s", what, l.handoffs())
}

// handoffs lists the rack's hand-offs and transfers, for failure messages.
func (l *rackEvents) handoffs() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, e := range l.events {
		switch e.Type {
		case events.TypeBootHandoff:
			var h events.BootHandoff
			if e.DecodeData(&h) == nil {
				b.WriteString("handoff " + h.Protocol + " " + h.Remote + " " + h.FileName + " " + h.Route + " " + h.Reason + "\n")
			}
		case events.TypeBootTransfer:
			var tr events.BootTransfer
			if e.DecodeData(&tr) == nil {
				b.WriteString("transfer " + tr.Protocol + " " + tr.Remote + " " + tr.FileName + " " + tr.Error + "\n")
			}
		}
	}
	return b.String()
}
