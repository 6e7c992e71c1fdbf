package lab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// MaxVMs bounds the lab: each VM is a TCG QEMU of its own, and the /24
// lab subnet's range has room for far more, but a laptop has not.
const MaxVMs = 16

// Config is a lab. DefaultConfig holds every default; Validate names
// every setting that is wrong.
type Config struct {
	// VMs is how many machines boot (1 to MaxVMs): even ones under
	// SeaBIOS, odd ones under OVMF (UEFI).
	VMs int
	// DataDir is dev's data directory; the lab keeps its state, images,
	// disks, QMP sockets and serial logs under DataDir/lab.
	DataDir string
	// Executable is the rackplane binary run as `dev` in the namespace.
	Executable string
	// DevArgs are the flags the dev inside the namespace gets besides
	// the lab's own (-data-dir, -boot-interface, -dhcp-mode,
	// -dhcp-subnets).
	DevArgs []string
	// APIAddr and NATSAddr are dev's -http-addr and -nats-addr: dev
	// listens on them inside the namespace, and the lab on the host, so
	// the browser, the CLI and a second rack reach them as without a lab.
	APIAddr, NATSAddr string
	// DatabaseURL is dev's PostgreSQL (empty: libpq's defaults). A TCP
	// server on loopback is forwarded into the namespace; a unix socket
	// needs nothing.
	DatabaseURL string
	// Subnet is the lab network: the rack has its first address, the
	// machines get leases from the upper half.
	Subnet netip.Prefix
	// MemoryMiB and DiskMiB size each VM (its disk is a sparse raw file).
	MemoryMiB, DiskMiB int
	// QEMU is qemu-system-x86_64; OVMFCode and OVMFVars are the UEFI
	// firmware and its variable store template.
	QEMU, OVMFCode, OVMFVars string
	// NICROM is the iPXE ROM QEMU gives the BIOS VMs' virtio NIC by
	// default, checked to be there: without it they would not network
	// boot ("" checks nothing).
	NICROM string
	// AgentSource is the Rackplane module the ephemeral environment's
	// agent is built from when the data directory has no environment yet
	// (empty: the module of the current directory).
	AgentSource string
	// Stdout takes the progress lines and the banner, and dev's output;
	// Stderr dev's and QEMU's errors.
	Stdout, Stderr io.Writer
}

// DefaultConfig is a lab of two VMs in .rackplane with dev's default
// addresses.
func DefaultConfig() Config {
	return Config{
		VMs:       2,
		DataDir:   ".rackplane",
		APIAddr:   "127.0.0.1:5240",
		NATSAddr:  "127.0.0.1:4250",
		Subnet:    netip.MustParsePrefix("10.77.0.0/24"),
		MemoryMiB: 1024,
		DiskMiB:   2048,
		QEMU:      "qemu-system-x86_64",
		OVMFCode:  "/usr/share/OVMF/OVMF_CODE_4M.fd",
		OVMFVars:  "/usr/share/OVMF/OVMF_VARS_4M.fd",
		NICROM:    "/usr/lib/ipxe/qemu/efi-virtio.rom",
		Stdout:    os.Stdout,
		Stderr:    os.Stderr,
	}
}

// geteuid is os.Geteuid; the tests replace it.
var geteuid = os.Geteuid

// maxSocketPath is what a unix socket's path may hold (sun_path less its
// NUL): QEMU refuses a longer QMP socket path.
const maxSocketPath = 107

// Validate checks the settings and what the lab needs of the machine
// (root, QEMU, OVMF), naming every problem at once.
func (c Config) Validate() error {
	var errs []error
	if geteuid() != 0 {
		errs = append(errs, errors.New("-vms: the lab makes a network namespace, a bridge and taps: run it as root (sudo)"))
	}
	if c.VMs < 1 || c.VMs > MaxVMs {
		errs = append(errs, fmt.Errorf("-vms %d: from 1 to %d", c.VMs, MaxVMs))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is empty"))
	} else if abs, err := filepath.Abs(c.DataDir); err == nil && len(c.vmFile(abs, MaxVMs-1, "qmp.sock")) > maxSocketPath {
		errs = append(errs, fmt.Errorf("-data-dir %s: too long a path for the VMs' QMP sockets (%d bytes at most below it)",
			c.DataDir, maxSocketPath-len(c.vmFile("", MaxVMs-1, "qmp.sock"))))
	} else if strings.Contains(abs, ",") {
		errs = append(errs, fmt.Errorf("-data-dir %s: %s", abs, commaInPath))
	}
	if c.Executable == "" {
		errs = append(errs, errors.New("lab: no rackplane executable to run dev with"))
	}
	for name, addr := range map[string]string{"-http-addr": c.APIAddr, "-nats-addr": c.NATSAddr} {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" || port == "" {
			errs = append(errs, fmt.Errorf("%s %q: the lab forwards it into its namespace: give host:port with a port", name, addr))
		}
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 24 || c.Subnet.Bits() < 8 {
		errs = append(errs, fmt.Errorf("lab subnet %s: an IPv4 prefix from /8 to /24", c.Subnet))
	}
	if c.MemoryMiB < 512 || c.MemoryMiB > 1024 {
		errs = append(errs, fmt.Errorf("lab VM memory %d MiB: from 512 (the ephemeral environment runs in RAM) to 1024", c.MemoryMiB))
	}
	if c.DiskMiB < 1024 {
		errs = append(errs, fmt.Errorf("lab VM disk %d MiB: 1024 at least (the disk image is 256 MiB, grown to the disk)", c.DiskMiB))
	}
	if _, err := exec.LookPath(c.QEMU); err != nil {
		errs = append(errs, fmt.Errorf("%s not found: install the Debian package qemu-system-x86 (and ipxe-qemu for its network boot ROMs)", c.QEMU))
	} else if c.NICROM != "" {
		if _, err := os.Stat(c.NICROM); err != nil {
			errs = append(errs, fmt.Errorf("the BIOS VMs' network boot ROM %s is missing: install the Debian package ipxe-qemu", c.NICROM))
		}
	}
	for _, f := range []string{c.OVMFCode, c.OVMFVars} {
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("UEFI firmware %s missing: install the Debian package ovmf", f))
		}
	}
	if strings.Contains(c.OVMFCode, ",") {
		errs = append(errs, fmt.Errorf("UEFI firmware %s: %s", c.OVMFCode, commaInPath))
	}
	if _, err := exec.LookPath("ip"); err != nil {
		errs = append(errs, errors.New("ip not found: install the Debian package iproute2"))
	}
	if c.Stdout == nil || c.Stderr == nil {
		errs = append(errs, errors.New("lab: Stdout and Stderr must be set"))
	}
	return errors.Join(errs...)
}

// commaInPath says why a path QEMU gets in an option may have no comma:
// QEMU would end the option there and read the rest as options of its
// own (the VMs' disks, QMP sockets and firmware are given so).
const commaInPath = "QEMU takes a comma in a path as the end of the option and the rest as options of its own: choose a path without commas"

// labDir is where the lab keeps its state below the data directory.
func labDir(dataDir string) string { return filepath.Join(dataDir, "lab") }

// vmFile is the path of a file of VM i (numbered from 0) below dataDir.
func (c Config) vmFile(dataDir string, i int, name string) string {
	return filepath.Join(labDir(dataDir), "vms", fmt.Sprintf("vm%d", i+1), name)
}

// rackIP is the rack's address on the lab network: the subnet's first.
func (c Config) rackIP() netip.Addr { return c.Subnet.Masked().Addr().Next() }
