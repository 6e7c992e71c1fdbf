package events_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

func goodInventory() events.Inventory {
	off := false
	return events.Inventory{
		CollectedAt: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), AgentVersion: "0.1.0-dev", Architecture: "amd64",
		CPU: events.InventoryCPU{Model: "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", Sockets: 2, Cores: 64, Threads: 128,
			Flags: []string{"aes", "avx2", "lm", "vmx"}},
		Memory: events.InventoryMemory{TotalBytes: 1017 << 20, InstalledBytes: 1 << 30, InstalledSource: events.MemorySMBIOS},
		Disks: []events.InventoryDisk{
			{Name: "sda", SizeBytes: 480103981056, Model: "SAMSUNG MZ7LH480", Serial: "S45PNA0M123456", WWID: "naa.5002538e40a1b2c3",
				ByID: []string{"/dev/disk/by-id/ata-SAMSUNG_MZ7LH480_S45PNA0M123456", "/dev/disk/by-id/wwn-0x5002538e40a1b2c3"}},
			{Name: "nvme0n1", SizeBytes: 1 << 40, Model: "INTEL SSDPE2KX010T8", Serial: "PHLJ0001"},
		},
		NICs: []events.InventoryNIC{
			{Name: "eno1", MAC: "52:54:00:12:34:56", Driver: "ixgbe", Link: events.LinkUp, SpeedMbps: 10000, Boot: true},
			{Name: "eno2", MAC: "52:54:00:12:34:57", Driver: "ixgbe", Link: events.LinkDown},
		},
		Firmware: events.InventoryFirmware{Type: events.FirmwareUEFI, SecureBoot: &off},
		DMI:      events.InventoryDMI{Vendor: "Dell Inc.", Product: "PowerEdge R650", Serial: "7XK2LM3", UUID: "4c4c4544-0058-4b10-8032-b7c04f4c4d33"},
		BMC:      &events.InventoryBMC{IPv4: "10.0.0.9"},
	}
}

// TestInventoryProblems: each malformed field is named, with its JSON
// path, by Check and by DecodeInventory (schema or Check); a good
// inventory has no problem and travels unchanged.
func TestInventoryProblems(t *testing.T) {
	on := true
	for _, tt := range []struct {
		name   string
		change func(*events.Inventory)
		want   []string // "" for valid
	}{
		{"good", func(*events.Inventory) {}, nil},
		{"no disks, no NICs, no BMC, no DMI", func(inv *events.Inventory) {
			inv.Disks, inv.NICs, inv.BMC, inv.DMI = []events.InventoryDisk{}, []events.InventoryNIC{}, nil, events.InventoryDMI{}
		}, nil},
		{"bios", func(inv *events.Inventory) { inv.Firmware = events.InventoryFirmware{Type: events.FirmwareBIOS} }, nil},
		{"secure boot unknown", func(inv *events.Inventory) { inv.Firmware.SecureBoot = nil }, nil},
		{"no installed memory", func(inv *events.Inventory) { inv.Memory.InstalledBytes, inv.Memory.InstalledSource = 0, "" }, nil},
		{"missing time", func(inv *events.Inventory) { inv.CollectedAt = time.Time{} }, []string{"collected_at"}},
		{"arch", func(inv *events.Inventory) { inv.Architecture = "x86_64" }, []string{"architecture"}},
		{"threads under cores", func(inv *events.Inventory) { inv.CPU.Threads = 3 }, []string{"cpu.threads 3"}},
		{"no model", func(inv *events.Inventory) { inv.CPU.Model = "" }, []string{"cpu.model: missing"}},
		{"control character", func(inv *events.Inventory) { inv.Disks[0].Serial = "S45\x1b[2J" }, []string{"disks[0].serial"}},
		{"long text", func(inv *events.Inventory) { inv.DMI.Product = strings.Repeat("x", 257) }, []string{"dmi.product"}},
		{"bad flag", func(inv *events.Inventory) { inv.CPU.Flags = []string{"vmx", "AVX"} }, []string{"cpu.flags[1]"}},
		{"installed without source", func(inv *events.Inventory) { inv.Memory.InstalledSource = "" }, []string{"memory.installed_source"}},
		{"memory tiny", func(inv *events.Inventory) { inv.Memory.TotalBytes = 100 }, []string{"memory.total_bytes 100"}},
		{"disks missing", func(inv *events.Inventory) { inv.Disks = nil }, []string{"disks: missing"}},
		{"disk twice", func(inv *events.Inventory) { inv.Disks[1].Name = "sda" }, []string{`disks[1].name "sda": also disks[0]`}},
		{"disk path", func(inv *events.Inventory) { inv.Disks[0].Name = "../sda" }, []string{"disks[0].name"}},
		{"negative size", func(inv *events.Inventory) { inv.Disks[1].SizeBytes = -1 }, []string{"disks[1].size_bytes -1"}},
		{"by-id elsewhere", func(inv *events.Inventory) { inv.Disks[0].ByID = []string{"/etc/passwd"} }, []string{"disks[0].by_id[0]"}},
		{"MAC upper case", func(inv *events.Inventory) { inv.NICs[0].MAC = "52:54:00:12:34:5A" }, []string{"nics[0].mac"}},
		{"MAC twice", func(inv *events.Inventory) { inv.NICs[1].MAC = inv.NICs[0].MAC }, []string{"nics[1].mac 52:54:00:12:34:56: also nics[0]"}},
		{"two boot NICs", func(inv *events.Inventory) { inv.NICs[1].Boot = true }, []string{"nics: 2 marked boot"}},
		{"link", func(inv *events.Inventory) { inv.NICs[1].Link = "lowerlayerdown" }, []string{"nics[1].link"}},
		{"speed", func(inv *events.Inventory) { inv.NICs[1].SpeedMbps = -1 }, []string{"nics[1].speed_mbps -1"}},
		{"firmware", func(inv *events.Inventory) { inv.Firmware.Type = "coreboot" }, []string{"firmware.type"}},
		{"secure boot under bios", func(inv *events.Inventory) {
			inv.Firmware = events.InventoryFirmware{Type: events.FirmwareBIOS, SecureBoot: &on}
		}, []string{"firmware.secure_boot"}},
		{"uuid upper case", func(inv *events.Inventory) { inv.DMI.UUID = strings.ToUpper(inv.DMI.UUID) }, []string{"dmi.uuid"}},
		{"empty bmc", func(inv *events.Inventory) { inv.BMC = &events.InventoryBMC{} }, []string{"bmc: no address"}},
		{"bmc v6 in v4", func(inv *events.Inventory) { inv.BMC.IPv4 = "fd00::9" }, []string{"bmc.ipv4"}},
		{"every problem at once", func(inv *events.Inventory) {
			inv.CPU.Sockets, inv.Disks[0].Name, inv.NICs[0].MAC, inv.DMI.UUID = 0, "", "x", "y"
		}, []string{"cpu.sockets 0", "disks[0].name", "nics[0].mac", "dmi.uuid"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inv := goodInventory()
			tt.change(&inv)
			err := inv.Check()
			raw, merr := json.Marshal(inv)
			if merr != nil {
				t.Fatal(merr)
			}
			got, derr := events.DecodeInventory(raw)
			if tt.want == nil {
				if err != nil || derr != nil {
					t.Fatalf("refused: %v / %v\n%s", err, derr, raw)
				}
				if !reflect.DeepEqual(got, inv) {
					t.Errorf("decoded\n%+v\nwant\n%+v", got, inv)
				}
				return
			}
			if err == nil || derr == nil {
				t.Fatalf("accepted (Check: %v, DecodeInventory: %v)", err, derr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check: %v\nwant it to name %q", err, w)
				}
			}
			if !reflect.DeepEqual(got, events.Inventory{}) {
				t.Errorf("a refused inventory returned %+v", got)
			}
		})
	}
}

// TestDecodeInventoryRefuses: what the schema alone catches (unknown
// fields, wrong types, oversize lists), named by its JSON path.
func TestDecodeInventoryRefuses(t *testing.T) {
	good, err := events.EncodeInventory(goodInventory())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		change func(m map[string]any)
		want   string
	}{
		{"unknown field", func(m map[string]any) { m["gpu"] = "x" }, "gpu"},
		{"unknown nested field", func(m map[string]any) { m["nics"].([]any)[0].(map[string]any)["ip"] = "10.0.0.1" }, "/nics/0"},
		{"string size", func(m map[string]any) { m["disks"].([]any)[0].(map[string]any)["size_bytes"] = "480G" }, "/disks/0/size_bytes"},
		{"too many disks", func(m map[string]any) {
			d := m["disks"].([]any)[0]
			m["disks"] = make([]any, events.MaxInventoryDisks+1)
			for i := range m["disks"].([]any) {
				m["disks"].([]any)[i] = d
			}
		}, "/disks"},
		{"no cpu", func(m map[string]any) { delete(m, "cpu") }, "cpu"},
		{"bad time", func(m map[string]any) { m["collected_at"] = "yesterday" }, "/collected_at"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			tt.change(m)
			raw, _ := json.Marshal(m)
			if _, err := events.DecodeInventory(raw); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DecodeInventory: %v, want an error naming %q", err, tt.want)
			}
		})
	}
	if _, err := events.DecodeInventory(make([]byte, events.MaxInventorySize+1)); err == nil {
		t.Error("an oversize document is taken")
	}
	if _, err := events.EncodeInventory(events.Inventory{}); err == nil {
		t.Error("an empty inventory encodes")
	}
}

// FuzzDecodeInventory: whatever arrives, DecodeInventory does not panic,
// and what it takes passes Check and survives a round trip unchanged.
func FuzzDecodeInventory(f *testing.F) {
	good, _ := events.EncodeInventory(goodInventory())
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"cpu":{"threads":1e400}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		inv, err := events.DecodeInventory(raw)
		if err != nil {
			return
		}
		if err := inv.Check(); err != nil {
			t.Fatalf("taken but Check says %v", err)
		}
		again, err := events.EncodeInventory(inv)
		if err != nil {
			t.Fatalf("taken but does not encode: %v", err)
		}
		inv2, err := events.DecodeInventory(again)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		// Compared in wire form: two decodes of one time zone offset
		// are equal times with distinct *time.Location.
		if third, _ := events.EncodeInventory(inv2); !bytes.Equal(again, third) {
			t.Fatalf("round trip changed it:\n%s\n%s", again, third)
		}
	})
}
