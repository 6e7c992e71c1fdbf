package inventory

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
)

func TestInventoryParsers(t *testing.T) {
	for _, tt := range []struct{ cmdline, want string }{
		{"console=ttyS0 BOOTIF=01-52-54-00-12-34-56 quiet", "52:54:00:12:34:56"},
		{"rackplane.mac=52:54:00:AA:BB:CC BOOTIF=01-52-54-00-12-34-56", "52:54:00:aa:bb:cc"},
		{"rackplane.mac=junk BOOTIF=525400123456", "52:54:00:12:34:56"},
		{"BOOTIF=01-52-54-00-12-34", ""},
		{"", ""},
	} {
		if got := BootMAC(tt.cmdline); got != tt.want {
			t.Errorf("BootMAC(%q) = %q, want %q", tt.cmdline, got, tt.want)
		}
	}
	for _, tt := range []struct {
		in           string
		total        int64
		wantSubError string
	}{
		{"MemTotal:        1004896 kB\nMemFree: 1 kB\n", 1004896 << 10, ""},
		{"MemFree: 1 kB\n", 0, "no MemTotal"},
		{"MemTotal: 12 MB\n", 0, "kB"},
		{"MemTotal: -5 kB\n", 0, "kB"},
	} {
		got, err := parseMemTotal([]byte(tt.in))
		if got != tt.total || (err == nil) != (tt.wantSubError == "") || err != nil && !strings.Contains(err.Error(), tt.wantSubError) {
			t.Errorf("parseMemTotal(%q) = %d, %v", tt.in, got, err)
		}
	}
	dev := func(size uint16, ext uint32, length byte) []byte {
		b := make([]byte, 0x28)
		b[0], b[1] = 17, length
		binary.LittleEndian.PutUint16(b[0x0C:], size)
		binary.LittleEndian.PutUint32(b[0x1C:], ext)
		return b
	}
	for _, tt := range []struct {
		name              string
		raw               []byte
		size              int64
		present, sizeKnow bool
	}{
		{"MiB", dev(4096, 0, 0x28), 4 << 30, true, true},
		{"KiB", dev(0x8000|512, 0, 0x28), 512 << 10, true, true},
		{"extended", dev(0x7FFF, 65536, 0x28), 64 << 30, true, true},
		{"extended in an old structure", dev(0x7FFF, 65536, 0x15), 0, true, false},
		{"empty slot", dev(0, 0, 0x28), 0, false, true},
		{"unknown", dev(0xFFFF, 0, 0x28), 0, true, false},
		{"not type 17", append([]byte{16}, dev(4096, 0, 0x28)[1:]...), 0, false, false},
		{"short", []byte{17, 0x28, 0}, 0, false, false},
	} {
		size, present, ok := parseSMBIOSMemoryDevice(tt.raw)
		if size != tt.size || present != tt.present || ok != tt.sizeKnow {
			t.Errorf("%s: %d %t %t", tt.name, size, present, ok)
		}
	}
	if s, ok := parseVPD80([]byte("\x00\x80\x00\x0a  ZC1AB\x00\x00\x00")); !ok || s != "ZC1AB" {
		t.Errorf("vpd_pg80: %q %t", s, ok)
	}
	if _, ok := parseVPD80([]byte("\x00\x80\x00\x40short")); ok {
		t.Error("vpd_pg80 longer than its page is taken")
	}
	if on, err := parseSecureBoot([]byte{6, 0, 0, 0, 1}); !on || err != nil {
		t.Errorf("SecureBoot 1: %t %v", on, err)
	}
	if _, err := parseSecureBoot([]byte{6, 0, 0, 0}); err == nil {
		t.Error("a short SecureBoot variable is taken")
	}
	for in, want := range map[string]string{
		"  SAMSUNG MZ7LH480    \n": "SAMSUNG MZ7LH480",
		"ser\x00\x00\x00":          "ser",
		"a\x1b[2Jb":                "a[2Jb",
		"tab\there":                "tab here",
		"bad\xffutf8":              "badutf8",
		strings.Repeat("é", 200):   strings.Repeat("é", 128),
	} {
		if got := cleanText(in); got != want {
			t.Errorf("cleanText(%q) = %q, want %q", in, got, want)
		}
	}
	if got := dmiText("To Be Filled By O.E.M."); got != "" {
		t.Errorf("placeholder kept: %q", got)
	}
	if got := dmiUUID("00000000-0000-0000-0000-000000000000"); got != "" {
		t.Errorf("zero UUID kept: %q", got)
	}
}

// TestInventoryParseCPUInfoHost reads this machine's own /proc/cpuinfo:
// the parser must take what a real kernel writes.
func TestInventoryParseCPUInfoHost(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatalf("this test reads a Linux machine's /proc/cpuinfo: %v", err)
	}
	ci, err := parseCPUInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Threads < 1 || ci.Cores < 1 || ci.Sockets < 1 || ci.Model == "" {
		t.Errorf("%+v", ci)
	}
}

// checkCPU: whatever parseCPUInfo takes fits an inventory.
func checkCPU(t *testing.T, ci cpuInfo) {
	inv := events.Inventory{CPU: events.InventoryCPU{Model: ci.Model, Sockets: ci.Sockets, Cores: ci.Cores, Threads: ci.Threads, Flags: ci.Flags}}
	for _, p := range inv.Problems() {
		if strings.HasPrefix(p.Error(), "cpu.") && !strings.Contains(p.Error(), "want 1 to 64") {
			t.Fatalf("%+v: %v", ci, p)
		}
	}
}

func FuzzParseCPUInfo(f *testing.F) {
	for _, tree := range []string{"amd64-vm", "arm64-uefi-nvme", "amd64-sata-uefi"} {
		if b, err := os.ReadFile("testdata/" + tree + "/proc/cpuinfo"); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("processor : 0\nvendor_id : x\nflags : lm\nphysical id : 0\ncore id : 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := parseCPUInfo(b)
		if err != nil {
			return
		}
		if ci.Arch != "amd64" && ci.Arch != "arm64" || ci.Threads < 1 || ci.Cores < 1 || ci.Sockets < 1 ||
			ci.Cores > ci.Threads || ci.Sockets > ci.Cores || !utf8.ValidString(ci.Model) || ci.Model == "" {
			t.Fatalf("%+v", ci)
		}
		checkCPU(t, ci)
	})
}

func FuzzParseMemTotal(f *testing.F) {
	f.Add([]byte("MemTotal:        1004896 kB\n"))
	f.Add([]byte("MemTotal: 99999999999999999999 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseMemTotal(b)
		if err == nil && (n <= 0 || n > 1<<53) {
			t.Fatalf("MemTotal %d taken", n)
		}
	})
}

// FuzzCleanText: any sysfs value becomes free text an inventory takes.
func FuzzCleanText(f *testing.F) {
	f.Add("  SAMSUNG MZ7LH480    \n")
	f.Add("\xff\xfe\x00abc\u0085")
	f.Fuzz(func(t *testing.T, s string) {
		for _, got := range []string{cleanText(s), dmiText(s)} {
			if !events.ValidInventoryText(got) || got != strings.TrimSpace(got) {
				t.Fatalf("cleanText(%q) = %q", s, got)
			}
		}
		if u := dmiUUID(s); u != "" && (len(u) != 36 || strings.ToLower(u) != u) {
			t.Fatalf("dmiUUID(%q) = %q", s, u)
		}
	})
}

func FuzzParseSMBIOSMemoryDevice(f *testing.F) {
	f.Add(append([]byte{17, 0x28}, make([]byte, 0x26)...))
	f.Fuzz(func(t *testing.T, raw []byte) {
		size, present, ok := parseSMBIOSMemoryDevice(raw)
		if size < 0 || size > 1<<51 || (ok && present && size == 0) || (!present && size != 0) {
			t.Fatalf("%d %t %t", size, present, ok)
		}
	})
}

func FuzzParseVPD80(f *testing.F) {
	f.Add([]byte("\x00\x80\x00\x0a  ZC1AB\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if s, ok := parseVPD80(raw); ok && (s == "" || !events.ValidInventoryText(s)) {
			t.Fatalf("%q", s)
		}
	})
}

func FuzzBootMAC(f *testing.F) {
	f.Add("BOOTIF=01-52-54-00-12-34-56 rackplane.mac=52:54:00:12:34:57")
	f.Fuzz(func(t *testing.T, cmdline string) {
		if mac := BootMAC(cmdline); mac != "" {
			if c, err := events.CanonicalMAC(mac); err != nil || c != mac {
				t.Fatalf("BootMAC(%q) = %q", cmdline, mac)
			}
		}
	})
}
