package inventory

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
)

// cpuInfo is what /proc/cpuinfo says of the processors.
type cpuInfo struct {
	Arch    string // amd64 or arm64
	Model   string
	Sockets int
	Cores   int
	Threads int
	Flags   []string // those that matter (x86Flags, arm64Flags), sorted
}

// The CPU flags an inventory keeps: those that decide what a machine can
// run (hardware virtualisation, 64-bit, crypto, vector units), not the
// hundred others. hypervisor marks a virtual machine.
var (
	x86Flags = []string{"aes", "avx", "avx2", "avx512f", "hypervisor", "lm", "nx", "pae", "pdpe1gb", "popcnt",
		"rdrand", "sha_ni", "sse4_1", "sse4_2", "ssse3", "svm", "vmx", "x2apic"}
	arm64Flags = []string{"aes", "asimd", "atomics", "crc32", "fp", "pmull", "sha1", "sha2", "sha512", "sve", "sve2"}
)

// parseCPUInfo reads /proc/cpuinfo of x86-64 or arm64: one block of
// "key : value" lines per logical CPU. x86 gives each CPU's socket
// (physical id) and core (core id); arm64 gives neither, nor a model
// name (the model is named from the implementer and part codes), and
// each CPU counts as a core of one socket: sysfs topology, when there is
// one, corrects the counts (see Collect).
func parseCPUInfo(b []byte) (cpuInfo, error) {
	var (
		ci        cpuInfo
		x86, arm  bool
		socket    string
		sockets   = map[string]bool{}
		cores     = map[[2]string]bool{}
		inCPU     bool
		flags     []string
		implement string
		part      string
		armArch   string
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok {
			continue // a blank line ends a CPU's block
		}
		switch key {
		case "processor":
			if _, err := strconv.Atoi(value); err != nil {
				continue // 32-bit arm's "Processor : ARMv7 …" line
			}
			ci.Threads++
			inCPU, socket = true, "0"
		case "vendor_id":
			x86 = true
		case "model name":
			if ci.Model == "" {
				ci.Model = value
			}
		case "physical id":
			socket = value
			sockets[value] = true
		case "core id":
			if inCPU {
				cores[[2]string{socket, value}] = true
			}
		case "flags":
			if flags == nil {
				flags = strings.Fields(value)
			}
		case "Features":
			arm = true
			if flags == nil {
				flags = strings.Fields(value)
			}
		case "CPU implementer":
			implement = value
		case "CPU part":
			part = value
		case "CPU architecture":
			armArch = value
		}
	}
	if err := sc.Err(); err != nil {
		return cpuInfo{}, fmt.Errorf("cpuinfo: %w", err)
	}
	if ci.Threads == 0 {
		return cpuInfo{}, errors.New("cpuinfo: no processor")
	}
	switch {
	case x86:
		if !slices.Contains(flags, "lm") {
			return cpuInfo{}, errors.New("cpuinfo: an x86 CPU without long mode (lm): only 64-bit x86 machines are supported")
		}
		ci.Arch = "amd64"
		ci.Flags = keep(flags, x86Flags)
		ci.Sockets = max(len(sockets), 1)
		ci.Cores = len(cores)
		if ci.Cores == 0 {
			ci.Cores = ci.Threads // no core ids: a guest shown flat
		}
	case arm:
		if n, err := strconv.Atoi(armArch); err != nil || n < 8 {
			return cpuInfo{}, fmt.Errorf("cpuinfo: ARM architecture %q: only 64-bit ARM (8 and later) is supported", armArch)
		}
		ci.Arch = "arm64"
		ci.Flags = keep(flags, arm64Flags)
		if ci.Model == "" {
			ci.Model = armModel(implement, part)
		}
		ci.Sockets, ci.Cores = 1, ci.Threads
	default:
		return cpuInfo{}, errors.New("cpuinfo: neither x86 (vendor_id) nor arm64 (Features)")
	}
	ci.Model = cleanText(ci.Model)
	if ci.Model == "" {
		ci.Model = "unknown"
	}
	ci.Cores = min(ci.Cores, ci.Threads)
	ci.Sockets = min(ci.Sockets, ci.Cores)
	return ci, nil
}

// keep returns the members of flags in want, sorted, once each.
func keep(flags, want []string) []string {
	out := []string{}
	for _, f := range flags {
		if slices.Contains(want, f) && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// armModel names an arm64 core from its implementer and part codes, as
// lscpu does, for the cores servers use; others get their codes.
func armModel(implementer, part string) string {
	names := map[string]struct {
		vendor string
		parts  map[string]string
	}{
		"0x41": {"ARM", map[string]string{"0xd03": "Cortex-A53", "0xd07": "Cortex-A57", "0xd08": "Cortex-A72",
			"0xd0b": "Cortex-A76", "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2",
			"0xd4f": "Neoverse-V2"}},
		"0x48": {"HiSilicon", map[string]string{"0xd01": "Kunpeng-920"}},
		"0x50": {"APM", map[string]string{"0x000": "X-Gene"}},
		"0x51": {"Qualcomm", map[string]string{"0xc00": "Falkor"}},
		"0x61": {"Apple", nil},
		"0xc0": {"Ampere", map[string]string{"0xac3": "Ampere-1", "0xac4": "Ampere-1a"}},
	}
	v, ok := names[implementer]
	if !ok {
		return fmt.Sprintf("ARM implementer %s part %s", implementer, part)
	}
	if p, ok := v.parts[part]; ok {
		return v.vendor + " " + p
	}
	return fmt.Sprintf("%s part %s", v.vendor, part)
}

// parseMemTotal returns MemTotal of /proc/meminfo, in bytes.
func parseMemTotal(b []byte) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("meminfo: MemTotal %.40q: want a number of kB", rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb <= 0 || kb > 1<<43 {
			return 0, fmt.Errorf("meminfo: MemTotal %.40q: want a number of kB", rest)
		}
		return kb << 10, nil
	}
	return 0, errors.New("meminfo: no MemTotal")
}

// parseSMBIOSMemoryDevice returns the size of an SMBIOS memory device
// (structure type 17, as /sys/firmware/dmi/entries/17-*/raw holds it):
// present false for an empty slot, ok false when the size is unknown or
// the structure is not a type 17.
func parseSMBIOSMemoryDevice(raw []byte) (size int64, present, ok bool) {
	// Type, length, handle, then the size at offset 0x0C; the
	// extended size (SMBIOS 2.7) at 0x1C.
	if len(raw) < 0x0E || raw[0] != 17 || int(raw[1]) < 0x0E || int(raw[1]) > len(raw) {
		return 0, false, false
	}
	v := binary.LittleEndian.Uint16(raw[0x0C:])
	switch {
	case v&0x7FFF == 0: // 0 MiB or 0 KiB: an empty slot
		return 0, false, true
	case v == 0xFFFF:
		return 0, true, false
	case v == 0x7FFF:
		if raw[1] < 0x20 {
			return 0, true, false
		}
		mb := binary.LittleEndian.Uint32(raw[0x1C:]) & 0x7FFFFFFF
		return int64(mb) << 20, mb > 0, mb > 0
	case v&0x8000 != 0:
		return int64(v&0x7FFF) << 10, true, true
	default:
		return int64(v) << 20, true, true
	}
}

// parseVPD80 returns the unit serial number of a SCSI Unit Serial Number
// VPD page (0x80), as /sys/block/X/device/vpd_pg80 holds it.
func parseVPD80(raw []byte) (string, bool) {
	if len(raw) < 4 || raw[1] != 0x80 {
		return "", false
	}
	n := int(binary.BigEndian.Uint16(raw[2:4]))
	if n > len(raw)-4 {
		return "", false
	}
	s := cleanText(string(raw[4 : 4+n]))
	return s, s != ""
}

// parseSecureBoot reads the EFI variable SecureBoot as efivarfs gives
// it: four bytes of attributes, then one byte, 1 when Secure Boot is on.
func parseSecureBoot(raw []byte) (bool, error) {
	if len(raw) != 5 || raw[4] > 1 {
		return false, fmt.Errorf("SecureBoot variable %x: want 4 bytes of attributes and 0 or 1", raw)
	}
	return raw[4] == 1, nil
}

// BootMAC returns the MAC of the NIC the machine booted from as the
// kernel command line gives it: rackplane.mac=<mac> (what the rack's boot
// config passes), else pxelinux's and iPXE's BOOTIF=01-<mac> (01 is the
// hardware type, Ethernet). It returns "" when neither is there or the
// value is not a MAC address.
func BootMAC(cmdline string) string {
	var rp, bootif string
	for w := range strings.FieldsSeq(cmdline) {
		if v, ok := strings.CutPrefix(w, "rackplane.mac="); ok {
			rp = v
		}
		if v, ok := strings.CutPrefix(w, "BOOTIF="); ok {
			bootif = v
		}
	}
	if mac, err := events.CanonicalMAC(rp); err == nil {
		return mac
	}
	if v, ok := strings.CutPrefix(bootif, "01-"); ok {
		bootif = v
	}
	if mac, err := events.CanonicalMAC(bootif); err == nil {
		return mac
	}
	return ""
}

// cleanText makes a value read from the hardware fit an inventory's free
// text: NUL padding and surrounding space gone, invalid UTF-8 and
// control characters dropped, cut to events.MaxInventoryText bytes on a
// character boundary.
func cleanText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			if r == '\t' || r == '\n' {
				b.WriteByte(' ')
			}
			continue
		}
		b.WriteRune(r)
	}
	out := strings.Join(strings.Fields(b.String()), " ")
	for len(out) > events.MaxInventoryText {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	return strings.TrimSpace(out)
}

// placeholders are what vendors leave in DMI fields they did not fill.
var placeholders = []string{"", "to be filled by o.e.m.", "default string", "not specified", "not applicable",
	"system product name", "system manufacturer", "system serial number", "0123456789", "none", "n/a", "unknown",
	"not available", "oem", "o.e.m.", "chassis serial number", "123456789"}

// dmiText returns a DMI value cleaned, or "" for a placeholder.
func dmiText(s string) string {
	s = cleanText(s)
	if slices.Contains(placeholders, strings.ToLower(s)) {
		return ""
	}
	return s
}

// dmiUUID returns a system UUID in lower case, or "" for one that is no
// machine's own: malformed, all zeros, all ones, or the counting
// placeholder some boards ship with.
func dmiUUID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) != 36 {
		return ""
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return ""
			}
		} else if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	switch s {
	case "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
		"03000200-0400-0500-0006-000700080009":
		return ""
	}
	return s
}
