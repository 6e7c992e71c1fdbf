package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane/schema"
)

// InventorySchema names the schema file (under schema/, without .json) of
// a machine's hardware inventory, as the commissioning agent
// (rackplane-agent inventory) takes it and sends it to its rack.
const InventorySchema = "inventory.v1"

// Bounds of an inventory. They keep a report from a hostile or broken
// machine small (well under MaxEventSize) while leaving room for large
// storage servers: a JBOD of 90 disks seen over two paths is 180 disks.
const (
	MaxInventoryDisks = 1024
	MaxInventoryNICs  = 256
	MaxInventoryFlags = 64
	// MaxInventoryText bounds every free-text value (models, serials,
	// vendor names) in bytes; the agent cuts longer ones.
	MaxInventoryText = 256
	// MaxInventoryByID bounds a disk's /dev/disk/by-id links.
	MaxInventoryByID = 16
	// MaxInventorySize bounds an inventory document in bytes.
	MaxInventorySize = 1 << 20
)

// Firmware types.
const (
	FirmwareBIOS = "bios"
	FirmwareUEFI = "uefi"
)

// NIC link states: whether the NIC has a carrier. Unknown is a NIC that is
// administratively down, whose carrier the kernel does not report.
const (
	LinkUp      = "up"
	LinkDown    = "down"
	LinkUnknown = "unknown"
)

// Sources of Memory.InstalledBytes.
const (
	// MemorySMBIOS: the sum of the SMBIOS memory devices (type 17), what
	// the firmware says is in the slots.
	MemorySMBIOS = "smbios"
	// MemoryBlocks: the kernel's memory blocks
	// (/sys/devices/system/memory), which cover the RAM the kernel was
	// given, holes under 4 GiB included, in whole blocks.
	MemoryBlocks = "memory_blocks"
)

// Inventory is a machine's hardware as the commissioning agent found it,
// in the form it travels in (JSON, snake_case names; schema
// inventory.v1.json). Absent optional values are unknown, never guessed.
type Inventory struct {
	CollectedAt  time.Time `json:"collected_at"`
	AgentVersion string    `json:"agent_version"`
	// Architecture is Debian's name of the CPU's: amd64 or arm64.
	Architecture string            `json:"architecture"`
	CPU          InventoryCPU      `json:"cpu"`
	Memory       InventoryMemory   `json:"memory"`
	Disks        []InventoryDisk   `json:"disks"`
	NICs         []InventoryNIC    `json:"nics"`
	Firmware     InventoryFirmware `json:"firmware"`
	DMI          InventoryDMI      `json:"dmi"`
	// BMC is the address of the machine's BMC when the agent could read
	// it; absent when it could not or there is none.
	BMC *InventoryBMC `json:"bmc,omitempty"`
}

// InventoryCPU is the machine's processors: Sockets packages holding Cores
// physical cores in all, running Threads logical CPUs in all. Flags are
// the features that decide what the machine can run (virtualisation,
// 64-bit, crypto and vector extensions), not the whole list.
type InventoryCPU struct {
	Model   string   `json:"model"`
	Sockets int      `json:"sockets"`
	Cores   int      `json:"cores"`
	Threads int      `json:"threads"`
	Flags   []string `json:"flags"`
}

// InventoryMemory is the machine's RAM. TotalBytes is what the kernel can
// use (MemTotal); InstalledBytes, when known, is what is installed, from
// InstalledSource (MemorySMBIOS or MemoryBlocks): the kernel and the
// firmware keep some RAM, so TotalBytes is a few percent less.
type InventoryMemory struct {
	TotalBytes      int64  `json:"total_bytes"`
	InstalledBytes  int64  `json:"installed_bytes,omitempty"`
	InstalledSource string `json:"installed_source,omitempty"`
}

// InventoryDisk is one whole block device backed by hardware (partitions,
// loop, RAM, device-mapper and optical devices are left out). Name is the
// kernel's (sda, nvme0n1, vda); WWID is the kernel's world-wide
// identifier of it (naa.…, eui.…, t10.…); ByID are its /dev/disk/by-id
// links, when udev made them.
type InventoryDisk struct {
	Name       string   `json:"name"`
	SizeBytes  int64    `json:"size_bytes"`
	Model      string   `json:"model,omitempty"`
	Serial     string   `json:"serial,omitempty"`
	WWID       string   `json:"wwid,omitempty"`
	Rotational bool     `json:"rotational"`
	Removable  bool     `json:"removable"`
	ByID       []string `json:"by_id,omitempty"`
}

// InventoryNIC is one network interface backed by hardware (bridges,
// bonds, VLANs and other virtual interfaces are left out). Link is
// LinkUp, LinkDown or LinkUnknown; SpeedMbps is absent when the driver
// does not say. Boot marks the NIC the machine booted from, at most one.
type InventoryNIC struct {
	Name      string `json:"name"`
	MAC       string `json:"mac"`
	Driver    string `json:"driver,omitempty"`
	Link      string `json:"link"`
	SpeedMbps int    `json:"speed_mbps,omitempty"`
	Boot      bool   `json:"boot"`
}

// InventoryFirmware is how the machine booted: Type FirmwareBIOS or
// FirmwareUEFI. SecureBoot is false under BIOS, and absent under UEFI
// when the agent could not read the firmware's SecureBoot variable.
type InventoryFirmware struct {
	Type       string `json:"type"`
	SecureBoot *bool  `json:"secure_boot,omitempty"`
}

// InventoryDMI is the machine's identity as its firmware gives it (SMBIOS
// system information). Placeholders vendors leave in ("To be filled by
// O.E.M.", an all-zero UUID) are left out.
type InventoryDMI struct {
	Vendor  string `json:"vendor,omitempty"`
	Product string `json:"product,omitempty"`
	Serial  string `json:"serial,omitempty"`
	UUID    string `json:"uuid,omitempty"`
}

// InventoryBMC is the LAN address of the machine's BMC, IPv4, IPv6 or
// both.
type InventoryBMC struct {
	IPv4 string `json:"ipv4,omitempty"`
	IPv6 string `json:"ipv6,omitempty"`
}

var (
	cpuFlagRe      = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
	diskNameRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.!:+-]{0,63}$`)
	driverRe       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	uuidRe         = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	byIDRe         = regexp.MustCompile(`^/dev/disk/by-id/[^/\x00-\x1f\x7f]{1,255}$`)
	agentVersionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)
)

// Check reports every problem of inv in one error, each naming its field
// by its JSON path, or nil. A report that fails it is refused whole.
func (inv Inventory) Check() error { return errors.Join(inv.Problems()...) }

// Problems lists every problem of inv, each naming its field.
func (inv Inventory) Problems() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	text := func(field, v string, required bool) {
		switch {
		case v == "" && required:
			bad("%s: missing", field)
		case !ValidInventoryText(v):
			bad("%s %.40q: want printable UTF-8 text of at most %d bytes", field, v, MaxInventoryText)
		}
	}
	if inv.CollectedAt.IsZero() {
		bad("collected_at: missing")
	}
	if !agentVersionRe.MatchString(inv.AgentVersion) {
		bad("agent_version %.40q: want a version such as 0.1.0", inv.AgentVersion)
	}
	if inv.Architecture != "amd64" && inv.Architecture != "arm64" {
		bad("architecture %.40q: want amd64 or arm64", inv.Architecture)
	}

	c := inv.CPU
	text("cpu.model", c.Model, true)
	if c.Sockets < 1 || c.Sockets > 64 {
		bad("cpu.sockets %d: want 1 to 64", c.Sockets)
	}
	if c.Cores < c.Sockets || c.Cores > 1<<14 {
		bad("cpu.cores %d: want %d (one a socket) to %d", c.Cores, max(c.Sockets, 1), 1<<14)
	}
	if c.Threads < c.Cores || c.Threads > 1<<16 {
		bad("cpu.threads %d: want %d (one a core) to %d", c.Threads, max(c.Cores, 1), 1<<16)
	}
	if len(c.Flags) > MaxInventoryFlags {
		bad("cpu.flags: %d, at most %d", len(c.Flags), MaxInventoryFlags)
	}
	for i, f := range c.Flags {
		if !cpuFlagRe.MatchString(f) {
			bad("cpu.flags[%d] %.40q: want a lower-case flag such as vmx", i, f)
		}
	}

	m := inv.Memory
	if m.TotalBytes < 1<<20 || m.TotalBytes > 1<<53 {
		bad("memory.total_bytes %d: want 1 MiB to 8 PiB", m.TotalBytes)
	}
	switch {
	case m.InstalledBytes == 0 && m.InstalledSource == "":
	case m.InstalledBytes < 1<<20 || m.InstalledBytes > 1<<53:
		bad("memory.installed_bytes %d: want 1 MiB to 8 PiB", m.InstalledBytes)
	case m.InstalledSource != MemorySMBIOS && m.InstalledSource != MemoryBlocks:
		bad("memory.installed_source %.40q: want %s or %s", m.InstalledSource, MemorySMBIOS, MemoryBlocks)
	}

	if inv.Disks == nil {
		bad("disks: missing (an empty list when the machine has none)")
	}
	if len(inv.Disks) > MaxInventoryDisks {
		bad("disks: %d, at most %d", len(inv.Disks), MaxInventoryDisks)
	}
	disks := map[string]int{}
	for i, d := range inv.Disks {
		f := fmt.Sprintf("disks[%d]", i)
		if !diskNameRe.MatchString(d.Name) {
			bad("%s.name %.40q: want a kernel block device name such as sda", f, d.Name)
		} else if j, dup := disks[d.Name]; dup {
			bad("%s.name %q: also disks[%d]", f, d.Name, j)
		} else {
			disks[d.Name] = i
		}
		if d.SizeBytes < 0 || d.SizeBytes > 1<<53 {
			bad("%s.size_bytes %d: want 0 to 8 PiB", f, d.SizeBytes)
		}
		text(f+".model", d.Model, false)
		text(f+".serial", d.Serial, false)
		text(f+".wwid", d.WWID, false)
		if len(d.ByID) > MaxInventoryByID {
			bad("%s.by_id: %d links, at most %d", f, len(d.ByID), MaxInventoryByID)
		}
		for k, p := range d.ByID {
			if !byIDRe.MatchString(p) || !utf8.ValidString(p) {
				bad("%s.by_id[%d] %.60q: want a path under /dev/disk/by-id/", f, k, p)
			}
		}
	}

	if inv.NICs == nil {
		bad("nics: missing (an empty list when the machine has none)")
	}
	if len(inv.NICs) > MaxInventoryNICs {
		bad("nics: %d, at most %d", len(inv.NICs), MaxInventoryNICs)
	}
	names, macs, boots := map[string]int{}, map[string]int{}, 0
	for i, n := range inv.NICs {
		f := fmt.Sprintf("nics[%d]", i)
		if !ValidInterfaceName(n.Name) {
			bad("%s.name %.40q: want a network interface name", f, n.Name)
		} else if j, dup := names[n.Name]; dup {
			bad("%s.name %q: also nics[%d]", f, n.Name, j)
		} else {
			names[n.Name] = i
		}
		if mac, err := CanonicalMAC(n.MAC); err != nil || mac != n.MAC {
			bad("%s.mac %.40q: want a MAC address such as 52:54:00:12:34:56 (lower case, colons)", f, n.MAC)
		} else if j, dup := macs[n.MAC]; dup {
			// Bonded NICs share a MAC; the kernel shows each port's
			// own (bonding's perm_hwaddr) only on the bond.
			bad("%s.mac %s: also nics[%d]", f, n.MAC, j)
		} else {
			macs[n.MAC] = i
		}
		if n.Driver != "" && !driverRe.MatchString(n.Driver) {
			bad("%s.driver %.40q: want a kernel driver name such as e1000", f, n.Driver)
		}
		if n.Link != LinkUp && n.Link != LinkDown && n.Link != LinkUnknown {
			bad("%s.link %.40q: want up, down or unknown", f, n.Link)
		}
		if n.SpeedMbps < 0 || n.SpeedMbps > 10_000_000 {
			bad("%s.speed_mbps %d: want 1 to 10000000, or none", f, n.SpeedMbps)
		}
		if n.Boot {
			boots++
		}
	}
	if boots > 1 {
		bad("nics: %d marked boot, at most one", boots)
	}

	switch fw := inv.Firmware; {
	case fw.Type != FirmwareBIOS && fw.Type != FirmwareUEFI:
		bad("firmware.type %.40q: want bios or uefi", fw.Type)
	case fw.Type == FirmwareBIOS && fw.SecureBoot != nil && *fw.SecureBoot:
		bad("firmware.secure_boot: true under bios, which has no Secure Boot")
	}

	d := inv.DMI
	text("dmi.vendor", d.Vendor, false)
	text("dmi.product", d.Product, false)
	text("dmi.serial", d.Serial, false)
	if d.UUID != "" && !uuidRe.MatchString(d.UUID) {
		bad("dmi.uuid %.40q: want a lower-case UUID", d.UUID)
	}

	if b := inv.BMC; b != nil {
		if b.IPv4 == "" && b.IPv6 == "" {
			bad("bmc: no address (leave bmc out when there is none)")
		}
		if a, err := netip.ParseAddr(b.IPv4); b.IPv4 != "" && (err != nil || !a.Is4() || a.String() != b.IPv4) {
			bad("bmc.ipv4 %.40q: want an IPv4 address such as 10.0.0.9", b.IPv4)
		}
		if a, err := netip.ParseAddr(b.IPv6); b.IPv6 != "" && (err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || a.String() != b.IPv6) {
			bad("bmc.ipv6 %.40q: want an IPv6 address in its short form such as fd00::9", b.IPv6)
		}
	}
	return errs
}

// ValidInventoryText reports whether s may be a free-text value of an
// inventory: valid UTF-8 of at most MaxInventoryText bytes, without
// control characters (it ends up in logs, tables and the web UI).
func ValidInventoryText(s string) bool {
	if len(s) > MaxInventoryText || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// DecodeInventory reads an inventory from the wire: it must be at most
// MaxInventorySize bytes, pass schema inventory.v1.json and Check. The
// error names every field in the way; nothing of a refused document is
// returned, so that no caller can apply part of it.
func DecodeInventory(raw []byte) (Inventory, error) {
	if len(raw) > MaxInventorySize {
		return Inventory{}, fmt.Errorf("inventory of %d bytes, limit %d", len(raw), MaxInventorySize)
	}
	set, err := schema.Default()
	if err != nil {
		return Inventory{}, fmt.Errorf("load schemas: %w", err)
	}
	if err := set.ValidateJSON(InventorySchema, raw); err != nil {
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	var inv Inventory
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&inv); err != nil {
		return Inventory{}, fmt.Errorf("inventory: %w", err)
	}
	if err := inv.Check(); err != nil {
		return Inventory{}, fmt.Errorf("inventory:\n%w", err)
	}
	return inv, nil
}

// EncodeInventory returns inv's wire form after checking it as
// DecodeInventory would: an agent's bug must not reach the rack.
func EncodeInventory(inv Inventory) ([]byte, error) {
	raw, err := json.Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	if _, err := DecodeInventory(raw); err != nil {
		return nil, err
	}
	return raw, nil
}
