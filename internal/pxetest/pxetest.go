package pxetest

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

//go:embed fetch-kernel.sh
var fetchKernelScript string

//go:embed fetch-modules.sh
var fetchModulesScript string

// Kernel returns the path of the kernel of Debian's linux-image-amd64,
// downloaded once into a cache directory.
func Kernel(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", fetchKernelScript, "fetch-kernel", filepath.Join(os.TempDir(), "rackplane-test-kernel")).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("kernel of Debian package linux-image-amd64 unavailable: %v\n%s", err, msg)
	}
	return string(bytes.TrimSpace(out))
}

// E1000 returns the kernel's e1000 network driver module (QEMU's
// "-device e1000" NIC), from the same package as Kernel.
func E1000(t testing.TB) []byte {
	t.Helper()
	k := Kernel(t)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(k), "e1000.ko"))
	if err != nil {
		t.Fatalf("e1000 module of Debian package linux-image-amd64: %v", err)
	}
	return b
}

// VirtioModules are the kernel modules a QEMU VM needs for virtio-blk
// disks and virtio-net NICs, in the order to load them (each after those
// it depends on), and efivarfs, for reading EFI variables. Debian builds
// them all as modules.
var VirtioModules = []string{"virtio_ring.ko", "virtio.ko", "virtio_pci_modern_dev.ko", "virtio_pci_legacy_dev.ko",
	"virtio_pci.ko", "virtio_blk.ko", "failover.ko", "net_failover.ko", "virtio_net.ko", "efivarfs.ko"}

// IPMIModules are the kernel modules that make a BMC's system interface
// (QEMU's isa-ipmi-kcs) the device /dev/ipmi0, in the order to load them.
var IPMIModules = []string{"ipmi_msghandler.ko", "ipmi_devintf.ko", "ipmi_si.ko"}

// Modules returns VirtioModules and IPMIModules of the package Kernel
// comes from, by file name, downloaded once into the kernel's cache
// directory.
func Modules(t testing.TB) map[string][]byte {
	t.Helper()
	k := Kernel(t)
	version := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
	out, err := exec.Command("sh", "-c", fetchModulesScript, "fetch-modules", filepath.Dir(k), version).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("modules of Debian package linux-image-%s unavailable: %v\n%s", version, err, msg)
	}
	dir := string(bytes.TrimSpace(out))
	mods := map[string][]byte{}
	for _, m := range append(append([]string{}, VirtioModules...), IPMIModules...) {
		b, err := os.ReadFile(filepath.Join(dir, m))
		if err != nil {
			t.Fatalf("module %s of Debian package linux-image-%s: %v", m, version, err)
		}
		mods[m] = b
	}
	return mods
}

// QEMU returns the path of qemu-system-x86_64 after checking that iPXE's
// ROM for virtio-net is there too. Under -short it skips t: booting a VM
// is not part of the quick set. It waits for one of the machine's VM
// slots (one per CPU, across test binaries) and holds it until t ends.
// Call it before anything else a boot test sets up, so that its timeouts
// start once it may run.
func QEMU(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU VM: skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 missing: install Debian package qemu-system-x86")
	}
	if _, err := os.Stat("/usr/lib/ipxe/qemu/efi-virtio.rom"); err != nil {
		t.Fatalf("iPXE ROM for virtio-net missing: install Debian package ipxe-qemu (%v)", err)
	}
	holdVMSlot(t)
	return qemu
}

// QEMUs is QEMU for a test that runs n VMs at once: it holds n VM slots
// (all of them, should the machine have fewer).
func QEMUs(t testing.TB, n int) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU VMs: skipped with -short")
	}
	holdVMSlots(t, n)
	return QEMU(t)
}

// OVMF returns QEMU's arguments for a UEFI VM (q35, OVMF with a copy of
// its variables of the VM's own) with a virtio-net NIC of MAC mac on
// netdev n0 (first in the boot order). Without o.IPXEROM the NIC has no option ROM, so that the
// firmware's own network stack does the network boot; with it, OVMF runs
// the EFI iPXE of QEMU's ROM, and the machine boots as UEFI iPXE.
func OVMF(t testing.TB, mac string, o OVMFOptions) []string {
	t.Helper()
	code, vars := "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	machine := "q35"
	var extra []string
	if o.SecureBoot {
		// Secure Boot needs SMM, so that the OS cannot write the
		// variable store behind the firmware's back.
		code, vars = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
		machine = "q35,smm=on"
		extra = []string{"-global", "driver=cfi.pflash01,property=secure,value=on"}
	}
	if o.HTTPBoot {
		// OVMF tries PXE before HTTP boot; this turns its PXE off.
		extra = append(extra, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
			"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n")
	}
	b, err := os.ReadFile(vars)
	if err != nil {
		t.Fatalf("OVMF missing: install the Debian package ovmf (%v)", err)
	}
	own := filepath.Join(t.TempDir(), "vars.fd") // the VM writes its variables
	if err := os.WriteFile(own, b, 0o644); err != nil {
		t.Fatal(err)
	}
	nic := "virtio-net-pci,netdev=n0,bootindex=1,mac=" + mac
	if !o.IPXEROM {
		nic += ",romfile="
	}
	return append([]string{"-machine", machine, "-drive", "if=pflash,format=raw,readonly=on,file=" + code,
		"-drive", "if=pflash,format=raw,file=" + own, "-device", nic}, extra...)
}

// OVMFOptions choose the UEFI firmware's ways to boot.
type OVMFOptions struct {
	// IPXEROM keeps the NIC's option ROM (QEMU's EFI iPXE), which then
	// does the network boot instead of the firmware's own stack.
	IPXEROM bool
	// SecureBoot runs the firmware with Microsoft's keys enrolled and
	// Secure Boot on.
	SecureBoot bool
	// HTTPBoot turns the firmware's PXE off, so it boots over HTTP.
	HTTPBoot bool
}

// Initramfs makes a gzip'd newc cpio archive holding the static busybox of
// Debian package busybox-static (with sh, udhcpc's default script and the
// mount points), init as /init, and files (by path, in the root).
func Initramfs(t testing.TB, init string, files map[string][]byte) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox missing: install Debian package busybox-static (%v)", err)
	}
	out, _ := exec.Command("file", "-L", "/bin/busybox").Output()
	if len(out) > 0 && !bytes.Contains(out, []byte("statically linked")) {
		t.Fatalf("/bin/busybox is not static: install Debian package busybox-static")
	}
	var c cpio
	for _, d := range []string{"bin", "dev", "proc", "sys", "etc", "tmp", "usr", "usr/share", "usr/share/udhcpc"} {
		c.add(d, 0o040755, 0, nil)
	}
	c.add("dev/console", 0o020600, 5<<8|1, nil)
	c.add("bin/busybox", 0o100755, 0, bb)
	c.add("bin/sh", 0o120777, 0, []byte("busybox"))
	c.add("usr/share/udhcpc/default.script", 0o100755, 0, []byte(udhcpcScript))
	return c.gzip(init, files)
}

// Overlay makes a gzip'd newc cpio archive holding only init as /init and
// files (by path, in the root), to append to another initramfs: the
// kernel unpacks concatenated archives in order and later files win, so
// it boots the other archive's userland with the test's /init.
func Overlay(init string, files map[string][]byte) []byte {
	var c cpio
	return c.gzip(init, files)
}

// udhcpcScript configures the interface from the lease, as Debian's
// default script does, with busybox's applets only.
const udhcpcScript = `#!/bin/busybox sh
case "$1" in
bound|renew)
	/bin/busybox ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	[ -n "$router" ] && /bin/busybox route add default gw "${router%% *}" dev "$interface"
	;;
esac
exit 0
`

// cpio writes the "newc" format the kernel unpacks into its initramfs.
type cpio struct {
	b   bytes.Buffer
	ino int
}

// add appends an entry; rdev is major<<8|minor for device nodes.
func (c *cpio) add(name string, mode uint32, rdev int, data []byte) {
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fmt.Fprintf(&c.b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev>>8, rdev&0xff, len(name)+1, 0)
	c.b.WriteString(name)
	c.b.WriteByte(0)
	c.pad()
	c.b.Write(data)
	c.pad()
}

func (c *cpio) pad() {
	for c.b.Len()%4 != 0 {
		c.b.WriteByte(0)
	}
}

// gzip adds init and files, and returns the gzip'd archive.
func (c *cpio) gzip(init string, files map[string][]byte) []byte {
	c.add("init", 0o100755, 0, []byte(init))
	for name, b := range files {
		c.add(name, 0o100644, 0, b)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(c.finish())
	zw.Close()
	return gz.Bytes()
}

func (c *cpio) finish() []byte {
	c.add("TRAILER!!!", 0, 0, nil)
	return c.b.Bytes()
}
