package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pxetest"
)

// inventoryInit mounts devtmpfs (which makes /dev/ipmi0), loads the
// drivers of the VM's disks, NICs and BMC, mounts efivarfs under UEFI,
// brings the NICs up, and prints the agent's
// inventory between markers. The boot MAC comes from the kernel command
// line: either rackplane.test.bootmac=<mac>, passed to the agent as
// -boot-mac, or rackplane.mac=<mac>, which the agent reads itself.
const inventoryInit = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in ` + "MODULES" + `; do /bin/busybox insmod /$m || echo "INSMOD-FAILED $m"; done
if [ -d /sys/firmware/efi/efivars ]; then
	/bin/busybox mount -t efivarfs efivarfs /sys/firmware/efi/efivars
	echo "EFIVARS: $(/bin/busybox ls /sys/firmware/efi/efivars | /bin/busybox grep -c .) $(/bin/busybox ls /sys/firmware/efi/efivars | /bin/busybox grep SecureBoot-)"
fi
for n in /sys/class/net/*; do /bin/busybox ifconfig "${n##*/}" up; done
/bin/busybox sleep 3
mac=
for w in $(/bin/busybox cat /proc/cmdline); do
	case "$w" in rackplane.test.bootmac=*) mac="-boot-mac=${w#*=}" ;; esac
done
/bin/busybox chmod 755 /rackplane-agent
echo INVENTORY-BEGIN
/rackplane-agent inventory $mac
echo INVENTORY-END
/bin/busybox poweroff -f
`

// TestInventoryQEMU boots the agent on QEMU VMs, once under SeaBIOS and
// once under OVMF (UEFI), each with 2 CPUs, 1 GiB, two virtio disks of
// set sizes and serials, and two NICs (e1000 and virtio-net) of set MACs,
// and checks that the inventory the agent prints is what QEMU was given.
//
// The VMs have no BMC: the IPMI drivers load and find none (ipmi_si
// refuses to load), and the inventory has no bmc.
func TestInventoryQEMU(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	kernel := pxetest.Kernel(t)
	initrd := inventoryInitrd(t)

	disks := []struct {
		serial string
		size   int64
	}{{"RP-INV-DISK-1", 64 << 20}, {"RP-INV-DISK-2", 96 << 20}}
	for _, tt := range []struct {
		name       string
		uefi       bool
		e1000, vio string // the NICs' MACs; e1000 is the boot NIC
		uuid       string
		cmdline    string // how the agent learns the boot MAC
	}{
		{"seabios", false, "52:54:00:1a:00:01", "52:54:00:1a:00:02", "5f1c2a3b-4d5e-4f60-8172-839405a6b7c8", "rackplane.test.bootmac=52:54:00:1a:00:01"},
		{"ovmf", true, "52:54:00:1b:00:01", "52:54:00:1b:00:02", "6a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9", "BOOTIF=01-52-54-00-1b-00-01"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{"-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot", "-monitor", "none",
				"-serial", "file:" + filepath.Join(dir, "serial.log"),
				"-kernel", kernel, "-initrd", initrd,
				"-append", "console=ttyS0 loglevel=1 panic=-1 " + tt.cmdline,
				"-uuid", tt.uuid, "-smbios", "type=1,serial=RP-INV-" + strings.ToUpper(tt.name),
				"-netdev", "user,id=n0", "-netdev", "user,id=n1", "-device", "e1000,netdev=n1,mac=" + tt.e1000}
			if tt.uefi {
				// The virtio-net NIC on netdev n0 is OVMF's.
				args = append(args, pxetest.OVMF(t, tt.vio, pxetest.OVMFOptions{})...)
			} else {
				args = append(args, "-device", "virtio-net-pci,netdev=n0,mac="+tt.vio)
			}
			for i, d := range disks {
				img := filepath.Join(dir, fmt.Sprintf("disk%d.img", i+1))
				if err := os.WriteFile(img, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(img, d.size); err != nil {
					t.Fatal(err)
				}
				id := "d" + string(rune('1'+i))
				args = append(args, "-drive", "file="+img+",if=none,id="+id+",format=raw",
					"-device", "virtio-blk-pci,drive="+id+",serial="+d.serial)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, qemu, args...)
			cmd.WaitDelay = 10 * time.Second
			// Killed with the test binary too, should that die first.
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			serial, _ := os.ReadFile(filepath.Join(dir, "serial.log"))
			if err != nil {
				t.Fatalf("qemu: %v\n%s\nserial:\n%s", err, out, tail(string(serial), 60))
			}
			raw := between(string(serial), "INVENTORY-BEGIN", "INVENTORY-END")
			if raw == "" {
				t.Fatalf("the VM printed no inventory\nserial:\n%s", tail(string(serial), 60))
			}
			inv, err := events.DecodeInventory([]byte(raw))
			if err != nil {
				t.Fatalf("the agent's inventory does not decode: %v\n%s", err, raw)
			}
			t.Logf("inventory of the %s VM:\n%s", tt.name, raw)
			// Under UEFI, Secure Boot's state was read from its
			// variable, not assumed.
			if tt.uefi && !strings.Contains(string(serial), "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c") {
				t.Errorf("efivarfs shows no SecureBoot variable\nserial:\n%s", tail(string(serial), 30))
			}
			checkVMInventory(t, inv, tt.uefi, tt.e1000, tt.vio, tt.uuid, "RP-INV-"+strings.ToUpper(tt.name), disks)
		})
	}
}

// inventoryInitrd makes an initramfs of inventoryInit, the agent and
// the modules of the VMs' disks, NICs and BMC.
func inventoryInitrd(t *testing.T) string {
	t.Helper()
	files := map[string][]byte{"e1000.ko": pxetest.E1000(t)}
	for name, b := range pxetest.Modules(t) {
		files[name] = b
	}
	agent := filepath.Join(t.TempDir(), "rackplane-agent")
	build := exec.Command("go", "build", "-o", agent, "github.com/rackplane/rackplane/cmd/rackplane-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	b, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	files["rackplane-agent"] = b
	order := strings.Join(append(append(append([]string{}, pxetest.VirtioModules...), "e1000.ko"), pxetest.IPMIModules...), " ")
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := os.WriteFile(initrd, pxetest.Initramfs(t, strings.Replace(inventoryInit, "MODULES", order, 1), files), 0o644); err != nil {
		t.Fatal(err)
	}
	return initrd
}

// TestInventoryBMC boots the agent on a QEMU VM (SeaBIOS) whose BMC is
// OpenIPMI's simulator, ipmi_sim, behind QEMU's KCS system interface,
// its LAN channel configured with an address: the inventory's bmc.ipv4
// is that address, the one ipmitool lan print shows over the BMC's LAN.
func TestInventoryBMC(t *testing.T) {
	endToEnd(t)
	// Its VMs and servers are its own (namespaces, ports, databases):
	// it runs beside the other VM tests, which keeps CI within its time.
	t.Parallel()
	qemu := pxetest.QEMU(t)
	kernel := pxetest.Kernel(t)
	initrd := inventoryInitrd(t)
	const addr = "192.0.2.77"
	v := startIPMIVMWith(t, []string{qemu, "-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 loglevel=1 panic=-1",
		"-netdev", "user,id=n0", "-device", "e1000,netdev=n0,mac=52:54:00:1c:00:01"}, ipmiVMOptions{LANAddress: addr})

	out, err := v.ipmitool("lan", "print", "1")
	if err != nil || !regexp.MustCompile(`(?m)^IP Address\s+: `+regexp.QuoteMeta(addr)+`\s*$`).MatchString(out) {
		t.Fatalf("ipmitool lan print 1 over the BMC's LAN: %v\n%s", err, out)
	}
	if out, err := v.ipmitool("chassis", "power", "on"); err != nil {
		t.Fatalf("ipmitool chassis power on: %v: %s", err, out)
	}
	// The VM powers off once it has printed the inventory.
	start := time.Now()
	eventually(t, 5*time.Minute, "the VM to print its inventory and power off", func() error {
		if !strings.Contains(v.serial(), "INVENTORY-END") || v.running() {
			return fmt.Errorf("serial:\n%s", tail(v.serial(), 20))
		}
		return nil
	})
	t.Logf("powered on to inventory and off in %s", time.Since(start).Round(time.Second))
	serial := v.serial()
	raw := between(serial, "INVENTORY-BEGIN", "INVENTORY-END")
	inv, err := events.DecodeInventory([]byte(raw))
	if err != nil {
		t.Fatalf("the agent's inventory does not decode: %v\n%s\nserial:\n%s", err, raw, tail(serial, 60))
	}
	t.Logf("inventory:\n%s", raw)
	if inv.BMC == nil || inv.BMC.IPv4 != addr || inv.BMC.IPv6 != "" {
		t.Fatalf("bmc %+v: want ipv4 %s\nserial:\n%s", inv.BMC, addr, tail(serial, 60))
	}
	for _, m := range pxetest.IPMIModules {
		if strings.Contains(serial, "INSMOD-FAILED "+m) {
			t.Errorf("module %s failed to load:\n%s", m, tail(serial, 60))
		}
	}
}

// checkVMInventory compares inv with what QEMU was given.
func checkVMInventory(t *testing.T, inv events.Inventory, uefi bool, bootMAC, otherMAC, uuid, serial string, disks []struct {
	serial string
	size   int64
}) {
	t.Helper()
	if inv.Architecture != "amd64" || inv.CPU.Threads != 2 || inv.CPU.Cores != 2 || inv.CPU.Sockets < 1 || inv.CPU.Model == "" {
		t.Errorf("cpu %+v, architecture %s: want 2 cores, 2 threads", inv.CPU, inv.Architecture)
	}
	// Installed memory is what QEMU was given; the kernel keeps some of
	// it for itself and the firmware some more (MemTotal is 94% of it
	// under Debian's kernel).
	const mem = 1024 << 20
	m := inv.Memory
	if m.InstalledBytes < mem*95/100 || m.InstalledBytes > mem*105/100 || m.InstalledSource != events.MemorySMBIOS ||
		m.TotalBytes > m.InstalledBytes || m.TotalBytes < m.InstalledBytes*85/100 {
		t.Errorf("memory %+v: want installed (SMBIOS) within 5%% of 1 GiB, total 85%% of that or more", m)
	}
	if len(inv.Disks) != len(disks) {
		t.Errorf("disks %+v: want %d", inv.Disks, len(disks))
	}
	for _, want := range disks {
		found := false
		for _, d := range inv.Disks {
			if d.Serial == want.serial {
				found = true
				if d.SizeBytes != want.size || !strings.HasPrefix(d.Name, "vd") {
					t.Errorf("disk %+v: want %d bytes", d, want.size)
				}
			}
		}
		if !found {
			t.Errorf("no disk of serial %s in %+v", want.serial, inv.Disks)
		}
	}
	nics := map[string]events.InventoryNIC{}
	for _, n := range inv.NICs {
		nics[n.MAC] = n
	}
	if len(inv.NICs) != 2 || nics[bootMAC].Driver != "e1000" || !nics[bootMAC].Boot || nics[otherMAC].Driver != "virtio_net" || nics[otherMAC].Boot {
		t.Errorf("nics %+v: want %s (e1000, boot) and %s (virtio_net)", inv.NICs, bootMAC, otherMAC)
	}
	if n := nics[bootMAC]; n.Link != events.LinkUp || n.SpeedMbps != 1000 {
		t.Errorf("boot NIC %+v: want link up at 1000 Mb/s", n)
	}
	wantFW := events.FirmwareBIOS
	if uefi {
		wantFW = events.FirmwareUEFI
	}
	if fw := inv.Firmware; fw.Type != wantFW || fw.SecureBoot == nil || *fw.SecureBoot {
		t.Errorf("firmware %+v: want %s, Secure Boot known and off", fw, wantFW)
	}
	if d := inv.DMI; d.Vendor != "QEMU" || d.UUID != uuid || d.Serial != serial || d.Product == "" {
		t.Errorf("dmi %+v: want vendor QEMU, uuid %s, serial %s", d, uuid, serial)
	}
	if inv.BMC != nil {
		t.Errorf("bmc %+v on a VM without one", inv.BMC)
	}
}

// between returns the line-trimmed text between two marker lines.
func between(s, begin, end string) string {
	i := strings.Index(s, begin+"\r\n")
	if i < 0 {
		i = strings.Index(s, begin+"\n")
	}
	j := strings.LastIndex(s, end)
	if i < 0 || j < i {
		return ""
	}
	return strings.TrimSpace(s[i+len(begin) : j])
}
