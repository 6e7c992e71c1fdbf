package pxetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// DebianInstallerARM64 is where Debian package
// debian-installer-12-netboot-arm64 installs its netboot tree: the arm64
// GRUB and shim the rack imports, and the installer's kernel (linux) and
// initramfs (initrd.gz), whose busybox has sh, udhcpc and wget.
const DebianInstallerARM64 = "/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64"

// InstallerARM64 returns the path of file in DebianInstallerARM64,
// failing t with the package to install when it is not there.
func InstallerARM64(t testing.TB, file string) string {
	t.Helper()
	p := filepath.Join(DebianInstallerARM64, file)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("arm64 Debian installer missing: install Debian package debian-installer-12-netboot-arm64 (%v)", err)
	}
	return p
}

// QEMUARM64 returns the path of qemu-system-aarch64 and the arguments
// that give its "virt" machine UEFI firmware (AAVMF) with variables of its
// own, so the firmware's PXE client is what boots. Under -short it skips
// t; it holds a VM slot as QEMU does. Call it before anything else a boot
// test sets up.
func QEMUARM64(t testing.TB) (qemu string, firmware []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU VM: skipped with -short")
	}
	qemu, err := exec.LookPath("qemu-system-aarch64")
	if err != nil {
		t.Fatalf("qemu-system-aarch64 missing: install Debian package qemu-system-arm")
	}
	code, vars := "/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"
	b, err := os.ReadFile(vars)
	if err == nil {
		_, err = os.Stat(code)
	}
	if err != nil {
		t.Fatalf("arm64 UEFI firmware missing: install Debian package qemu-efi-aarch64 (%v)", err)
	}
	holdVMSlot(t)
	own := filepath.Join(t.TempDir(), "AAVMF_VARS.fd") // the VM writes its variables
	if err := os.WriteFile(own, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return qemu, []string{"-drive", "if=pflash,format=raw,readonly=on,file=" + code, "-drive", "if=pflash,format=raw,file=" + own}
}
