package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Bounds of what is read: sysfs values are a page at most; cpuinfo of a
// machine with a thousand CPUs stays well under the limit.
const (
	maxValue   = 64 << 10
	maxCPUInfo = 8 << 20
)

// secureBootVar is the EFI global variable SecureBoot, as efivarfs names
// it.
const secureBootVar = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// Collect takes the inventory of the Linux system whose /proc and /sys are
// under root ("/" on the machine itself). bootMAC, in any form
// events.CanonicalMAC reads, marks the NIC the machine booted from ("":
// none known; BootMAC reads it from the kernel command line); a MAC no
// NIC has marks none. Every path is resolved inside root, symbolic links
// included, so a tree of copied files is read as the machine would be.
//
// It fails when the CPU or the memory cannot be read; a disk or NIC
// attribute it cannot read is left out. The result passes
// events.Inventory.Check.
func Collect(root, bootMAC string) (events.Inventory, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	defer r.Close()
	c := collector{r: r}
	inv := events.Inventory{CollectedAt: time.Now().UTC().Truncate(time.Millisecond), AgentVersion: rackplane.Version}
	if err := c.cpu(&inv); err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	if err := c.memory(&inv.Memory); err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	if inv.Disks, err = c.disks(); err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	if inv.NICs, err = c.nics(bootMAC); err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	inv.Firmware = c.firmware()
	inv.DMI = events.InventoryDMI{
		Vendor:  dmiText(c.value("sys/class/dmi/id/sys_vendor")),
		Product: dmiText(c.value("sys/class/dmi/id/product_name")),
		Serial:  dmiText(c.value("sys/class/dmi/id/product_serial")),
		UUID:    dmiUUID(c.value("sys/class/dmi/id/product_uuid")),
	}
	// The BMC's LAN address takes an IPMI request, which CollectMachine
	// makes: neither sysfs nor SMBIOS has it (SMBIOS type 38 gives the
	// host-side interface, not the LAN).
	if err := inv.Check(); err != nil {
		return events.Inventory{}, fmt.Errorf("inventory: what was read does not make a valid inventory:\n%w", err)
	}
	return inv, nil
}

// Disks lists the disks of the Linux system under root as Collect does
// (no optical drives, no virtual devices), for the agent's other work.
func Disks(root string) ([]events.InventoryDisk, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	defer r.Close()
	return collector{r: r}.disks()
}

// Collection is an inventory, and why a part of it that does not fail
// the whole could not be read. The reasons are for the log: an
// inventory holds what was read, not why something was not.
type Collection struct {
	Inventory events.Inventory
	// BMCErr says why the inventory has no bmc although the machine
	// has an IPMI device: the device erred, the BMC did not answer, or
	// no LAN channel has an address. It is nil when bmc was read, and
	// when there is no device (no BMC, no driver for it, or a root
	// other than "/").
	BMCErr error
}

// CollectMachine is Collect and, on the machine itself (root "/"), the
// LAN address of its BMC, asked through the first of
// DefaultIPMIDevices that exists (Get LAN Configuration Parameters, as
// ipmitool lan print asks). A tree of copied files has no device to
// ask. A BMC that cannot be read leaves bmc out without failing the
// inventory: Collection.BMCErr says why. Asking the BMC is bounded
// (10s, each request 2s) and ends with ctx.
func CollectMachine(ctx context.Context, root, bootMAC string) (Collection, error) {
	var devices []string
	if filepath.Clean(root) == "/" {
		devices = DefaultIPMIDevices
	}
	return collectMachine(ctx, root, bootMAC, devices)
}

func collectMachine(ctx context.Context, root, bootMAC string, devices []string) (Collection, error) {
	inv, err := Collect(root, bootMAC)
	if err != nil {
		return Collection{}, err
	}
	c := Collection{Inventory: inv}
	bmc, err := readBMC(ctx, devices)
	switch {
	case errors.Is(err, errNoIPMIDevice):
	case err != nil:
		c.BMCErr = fmt.Errorf("bmc: %w", err)
	default:
		inv.BMC = bmc
		if err := inv.Check(); err != nil {
			c.BMCErr = fmt.Errorf("bmc %+v: %w", *bmc, err)
		} else {
			c.Inventory = inv
		}
	}
	return c, nil
}

type collector struct {
	r *os.Root
}

// read returns the file at name (relative to root), at most limit bytes.
func (c collector) read(name string, limit int64) ([]byte, error) {
	f, err := c.r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: more than %d bytes", name, limit)
	}
	return b, nil
}

// value returns a sysfs attribute without its trailing newline, or "" when
// it cannot be read (absent, or refused: a NIC's carrier while it is
// down).
func (c collector) value(name string) string {
	b, err := c.read(name, maxValue)
	if err != nil {
		return ""
	}
	return strings.TrimRight(string(b), "\n\x00")
}

// number returns a sysfs attribute holding a decimal integer.
func (c collector) number(name string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(c.value(name)), 10, 64)
	return n, err == nil
}

func (c collector) exists(name string) bool {
	_, err := c.r.Lstat(name)
	return err == nil
}

// dir lists a directory's entry names, sorted; nil when there is none.
func (c collector) dir(name string) []string {
	entries, err := fs.ReadDir(c.r.FS(), name)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// link returns the last element of a symbolic link's target (a driver's
// name), or "".
func (c collector) link(name string) string {
	t, err := c.r.Readlink(name)
	if err != nil {
		return ""
	}
	return path.Base(t)
}

// cpu reads /proc/cpuinfo, and the sysfs topology of the online CPUs when
// every one has it: it counts sockets and cores on arm64 too, where
// cpuinfo does not say.
func (c collector) cpu(inv *events.Inventory) error {
	b, err := c.read("proc/cpuinfo", maxCPUInfo)
	if err != nil {
		return fmt.Errorf("cpu: %w", err)
	}
	ci, err := parseCPUInfo(b)
	if err != nil {
		return err
	}
	sockets, cores, threads := map[string]bool{}, map[[2]string]bool{}, 0
	for _, cpu := range c.dir("sys/devices/system/cpu") {
		if _, err := strconv.Atoi(strings.TrimPrefix(cpu, "cpu")); err != nil || !strings.HasPrefix(cpu, "cpu") {
			continue
		}
		top := "sys/devices/system/cpu/" + cpu + "/topology/"
		pkg, core := c.value(top+"physical_package_id"), c.value(top+"core_id")
		if pkg == "" || core == "" {
			continue // offline: no topology
		}
		threads++
		sockets[pkg] = true
		cores[[2]string{pkg, core}] = true
	}
	if threads == ci.Threads {
		ci.Sockets, ci.Cores = len(sockets), len(cores)
	}
	inv.Architecture = ci.Arch
	inv.CPU = events.InventoryCPU{Model: ci.Model, Sockets: ci.Sockets, Cores: ci.Cores, Threads: ci.Threads, Flags: ci.Flags}
	return nil
}

// memory reads MemTotal, and what is installed: the SMBIOS memory devices
// when the firmware lists them with their sizes, else the kernel's memory
// blocks (which count whole blocks, 128 MiB and up, of the RAM the kernel
// was handed).
func (c collector) memory(m *events.InventoryMemory) error {
	b, err := c.read("proc/meminfo", maxValue)
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if m.TotalBytes, err = parseMemTotal(b); err != nil {
		return err
	}
	var smbios int64
	known := true
	for _, e := range c.dir("sys/firmware/dmi/entries") {
		if !strings.HasPrefix(e, "17-") {
			continue
		}
		raw, err := c.read("sys/firmware/dmi/entries/"+e+"/raw", maxValue)
		if err != nil {
			known = false
			break
		}
		size, present, ok := parseSMBIOSMemoryDevice(raw)
		if present && !ok {
			known = false
			break
		}
		smbios += size
	}
	// Firmware that lists less than the kernel got is wrong about it.
	if known && smbios >= m.TotalBytes {
		m.InstalledBytes, m.InstalledSource = smbios, events.MemorySMBIOS
		return nil
	}
	bs, err := strconv.ParseInt(strings.TrimPrefix(c.value("sys/devices/system/memory/block_size_bytes"), "0x"), 16, 64)
	if err != nil || bs <= 0 {
		return nil
	}
	var blocks int64
	for _, e := range c.dir("sys/devices/system/memory") {
		if n, err := strconv.Atoi(strings.TrimPrefix(e, "memory")); err == nil && n >= 0 && strings.HasPrefix(e, "memory") {
			blocks++
		}
	}
	if total := blocks * bs; blocks > 0 && total >= m.TotalBytes && total <= 1<<53 {
		m.InstalledBytes, m.InstalledSource = total, events.MemoryBlocks
	}
	return nil
}

// Block devices that are no disk: optical and floppy drives. Virtual
// devices (loop, ram, zram, device-mapper, md, nbd) have no device link
// and are left out for that.
var notDisk = []string{"sr", "fd"}

func (c collector) disks() ([]events.InventoryDisk, error) {
	byID := map[string][]string{}
	for _, l := range c.dir("dev/disk/by-id") {
		if t := c.link("dev/disk/by-id/" + l); t != "" {
			byID[t] = append(byID[t], "/dev/disk/by-id/"+l)
		}
	}
	disks := []events.InventoryDisk{}
	for _, name := range c.dir("sys/block") {
		dir := "sys/block/" + name + "/"
		if !c.exists(dir+"device") || slices.ContainsFunc(notDisk, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		sectors, ok := c.number(dir + "size") // in 512-byte units, whatever the device's own
		if !ok || sectors < 0 || sectors > 1<<44 {
			continue
		}
		d := events.InventoryDisk{
			Name: name, SizeBytes: sectors * 512,
			Model:      cleanText(c.value(dir + "device/model")),
			Serial:     c.serial(dir),
			WWID:       cleanText(c.value(dir + "wwid")),
			Rotational: c.value(dir+"queue/rotational") == "1",
			Removable:  c.value(dir+"removable") == "1",
		}
		if d.WWID == "" {
			d.WWID = cleanText(c.value(dir + "device/wwid"))
		}
		if links := byID[name]; len(links) > 0 {
			d.ByID = links[:min(len(links), events.MaxInventoryByID)]
		}
		disks = append(disks, d)
	}
	if len(disks) > events.MaxInventoryDisks {
		return nil, fmt.Errorf("disks: %d, more than an inventory holds (%d)", len(disks), events.MaxInventoryDisks)
	}
	return disks, nil
}

// serial returns a disk's serial number: virtio-blk's own attribute,
// NVMe's controller's, else the SCSI unit serial number page (which
// libata answers for SATA disks too).
func (c collector) serial(dir string) string {
	for _, f := range []string{"serial", "device/serial"} {
		if s := cleanText(c.value(dir + f)); s != "" {
			return s
		}
	}
	if raw, err := c.read(dir+"device/vpd_pg80", maxValue); err == nil {
		if s, ok := parseVPD80(raw); ok {
			return s
		}
	}
	return ""
}

// nics lists the network interfaces backed by a device. An interface
// without a 48-bit MAC (InfiniBand) is left out: machines are known by
// their Ethernet MACs; so is one whose MAC an interface listed before it
// has (firmware that gives every port the system's MAC), since a MAC
// names one NIC.
func (c collector) nics(bootMAC string) ([]events.InventoryNIC, error) {
	boot, _ := events.CanonicalMAC(bootMAC)
	nics := []events.InventoryNIC{}
	seen := map[string]bool{}
	for _, name := range c.dir("sys/class/net") {
		dir := "sys/class/net/" + name + "/"
		if !c.exists(dir+"device") || !events.ValidInterfaceName(name) {
			continue
		}
		// A bond's ports all show the bond's address; the port's own
		// is perm_hwaddr.
		addr := c.value(dir + "bonding_slave/perm_hwaddr")
		if addr == "" {
			addr = c.value(dir + "address")
		}
		mac, err := events.CanonicalMAC(addr)
		if err != nil || seen[mac] {
			continue
		}
		seen[mac] = true
		n := events.InventoryNIC{Name: name, MAC: mac, Driver: c.link(dir + "device/driver"), Link: events.LinkUnknown, Boot: mac == boot}
		if !driverName(n.Driver) {
			n.Driver = ""
		}
		switch c.value(dir + "carrier") {
		case "1":
			n.Link = events.LinkUp
		case "0":
			n.Link = events.LinkDown
		}
		if s, ok := c.number(dir + "speed"); ok && s > 0 && s <= 10_000_000 {
			n.SpeedMbps = int(s)
		}
		nics = append(nics, n)
	}
	if len(nics) > events.MaxInventoryNICs {
		return nil, fmt.Errorf("nics: %d, more than an inventory holds (%d)", len(nics), events.MaxInventoryNICs)
	}
	return nics, nil
}

func driverName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && (r == '_' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

// firmware tells UEFI from BIOS by /sys/firmware/efi, which the kernel
// makes only when UEFI started it, and reads Secure Boot's state from
// efivarfs: unknown when that is not mounted.
func (c collector) firmware() events.InventoryFirmware {
	off := false
	if !c.exists("sys/firmware/efi") {
		return events.InventoryFirmware{Type: events.FirmwareBIOS, SecureBoot: &off}
	}
	fw := events.InventoryFirmware{Type: events.FirmwareUEFI}
	raw, err := c.read(secureBootVar, maxValue)
	switch {
	case err == nil:
		if on, err := parseSecureBoot(raw); err == nil {
			fw.SecureBoot = &on
		}
	case errors.Is(err, fs.ErrNotExist) && len(c.dir("sys/firmware/efi/efivars")) > 0:
		// Variables are readable and SecureBoot is not one: firmware
		// without Secure Boot support.
		fw.SecureBoot = &off
	}
	return fw
}
