package inventory

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

func ptr[T any](v T) *T { return &v }

// TestInventoryCollect reads each tree of testdata (see its README) and
// compares the whole inventory; each one passes the schema.
func TestInventoryCollect(t *testing.T) {
	for _, tt := range []struct {
		tree    string
		bootMAC string
		want    events.Inventory
	}{
		{"amd64-vm", "02-FC-00-00-00-01", events.Inventory{
			Architecture: "amd64",
			CPU: events.InventoryCPU{Model: "AMD EPYC", Sockets: 1, Cores: 2, Threads: 2,
				Flags: []string{"aes", "avx", "avx2", "avx512f", "hypervisor", "lm", "nx", "pae", "pdpe1gb", "popcnt", "rdrand",
					"sha_ni", "sse4_1", "sse4_2", "ssse3", "x2apic"}},
			Memory:   events.InventoryMemory{TotalBytes: 24684092 << 10, InstalledBytes: 192 << 27, InstalledSource: events.MemoryBlocks},
			Disks:    []events.InventoryDisk{{Name: "vda", SizeBytes: 536870912 * 512, Serial: "overlayblk", Rotational: true}},
			NICs:     []events.InventoryNIC{{Name: "eth0", MAC: "02:fc:00:00:00:01", Driver: "virtio_net", Link: events.LinkUp, Boot: true}},
			Firmware: events.InventoryFirmware{Type: events.FirmwareBIOS, SecureBoot: ptr(false)},
		}},
		{"arm64-uefi-nvme", "", events.Inventory{
			Architecture: "arm64",
			CPU: events.InventoryCPU{Model: "ARM Neoverse-N1", Sockets: 1, Cores: 4, Threads: 4,
				Flags: []string{"aes", "asimd", "atomics", "crc32", "fp", "pmull", "sha1", "sha2"}},
			Memory: events.InventoryMemory{TotalBytes: 16213748 << 10, InstalledBytes: 16 << 30, InstalledSource: events.MemorySMBIOS},
			Disks: []events.InventoryDisk{{Name: "nvme0n1", SizeBytes: 3750748848 * 512, Model: "SAMSUNG MZQL21T9HCJR-00A07",
				Serial: "S64GNE0R600123", WWID: "eui.36344630528056220025384500000001",
				ByID: []string{"/dev/disk/by-id/nvme-SAMSUNG_MZQL21T9HCJR-00A07_S64GNE0R600123",
					"/dev/disk/by-id/nvme-eui.36344630528056220025384500000001"}}},
			NICs: []events.InventoryNIC{
				{Name: "enP2p1s0f0", MAC: "0c:42:a1:00:00:10", Driver: "mlx5_core", Link: events.LinkUp, SpeedMbps: 25000},
				{Name: "enP2p1s0f1", MAC: "0c:42:a1:00:00:11", Driver: "mlx5_core", Link: events.LinkDown},
			},
			Firmware: events.InventoryFirmware{Type: events.FirmwareUEFI, SecureBoot: ptr(true)},
			DMI:      events.InventoryDMI{Vendor: "Ampere(R)", Product: "Mt.Jade", Serial: "AMP-0042-XY", UUID: "1d2f3a4b-0000-1111-2222-0123456789ab"},
		}},
		{"amd64-sata-uefi", "ac:1f:6b:00:00:01", events.Inventory{
			Architecture: "amd64",
			CPU: events.InventoryCPU{Model: "Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz", Sockets: 2, Cores: 4, Threads: 8,
				Flags: []string{"aes", "avx", "avx2", "avx512f", "lm", "nx", "pae", "pdpe1gb", "popcnt", "rdrand",
					"sse4_1", "sse4_2", "ssse3", "vmx", "x2apic"}},
			Memory: events.InventoryMemory{TotalBytes: 65598504 << 10, InstalledBytes: 32 << 31, InstalledSource: events.MemoryBlocks},
			Disks: []events.InventoryDisk{{Name: "sda", SizeBytes: 7814037168 * 512, Model: "ST4000NM0035-1V4", Serial: "ZC1ABCDE",
				WWID: "naa.5000c500a1b2c3d4", Rotational: true,
				ByID: []string{"/dev/disk/by-id/ata-ST4000NM0035-1V4_ZC1ABCDE", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"}}},
			NICs:     []events.InventoryNIC{{Name: "eno1", MAC: "ac:1f:6b:00:00:01", Driver: "e1000e", Link: events.LinkUnknown, Boot: true}},
			Firmware: events.InventoryFirmware{Type: events.FirmwareUEFI, SecureBoot: ptr(false)},
			DMI:      events.InventoryDMI{Product: "X11DPi-N"},
		}},
	} {
		t.Run(tt.tree, func(t *testing.T) {
			before := time.Now().UTC().Add(-time.Second)
			got, err := Collect(filepath.Join("testdata", tt.tree), tt.bootMAC)
			if err != nil {
				t.Fatal(err)
			}
			if got.CollectedAt.Before(before) || got.AgentVersion != rackplane.Version {
				t.Errorf("collected_at %s, agent_version %q", got.CollectedAt, got.AgentVersion)
			}
			tt.want.CollectedAt, tt.want.AgentVersion = got.CollectedAt, got.AgentVersion
			if !reflect.DeepEqual(got, tt.want) {
				g, _ := json.MarshalIndent(got, "", "  ")
				w, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("got\n%s\nwant\n%s", g, w)
			}
			if _, err := events.EncodeInventory(got); err != nil {
				t.Errorf("does not pass the schema: %v", err)
			}
		})
	}
}

// TestInventoryCollectRefuses: without a CPU or memory there is no
// inventory, and the error says which file.
func TestInventoryCollectRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := Collect(dir, ""); err == nil || !strings.Contains(err.Error(), "cpuinfo") {
		t.Errorf("no /proc: %v", err)
	}
	write(t, dir, "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Pentium 4\nflags\t\t: fpu pae\n")
	if _, err := Collect(dir, ""); err == nil || !strings.Contains(err.Error(), "long mode") {
		t.Errorf("32-bit CPU: %v", err)
	}
	write(t, dir, "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu lm\n")
	if _, err := Collect(dir, ""); err == nil || !strings.Contains(err.Error(), "meminfo") {
		t.Errorf("no meminfo: %v", err)
	}
	write(t, dir, "proc/meminfo", "MemTotal:  1048576 kB\n")
	inv, err := Collect(dir, "")
	if err != nil {
		t.Fatalf("a machine with a CPU and memory alone: %v", err)
	}
	if len(inv.Disks) != 0 || len(inv.NICs) != 0 || inv.CPU.Threads != 1 || inv.Memory.InstalledSource != "" {
		t.Errorf("%+v", inv)
	}
}

// TestInventoryCollectStaysInRoot: a link out of the tree is not followed
// (a test's tree never reads the host's files).
func TestInventoryCollectStaysInRoot(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu lm\n")
	write(t, dir, "proc/meminfo", "MemTotal:  1048576 kB\n")
	outside := filepath.Join(t.TempDir(), "vendor")
	if err := os.WriteFile(outside, []byte("Outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sys/class/dmi/id"), 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"sys_vendor": outside, "product_name": "../../../../../../" + outside} {
		if err := os.Symlink(target, filepath.Join(dir, "sys/class/dmi/id", link)); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := Collect(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if inv.DMI.Vendor != "" || inv.DMI.Product != "" {
		t.Errorf("read outside the root: %+v", inv.DMI)
	}
}

func write(t *testing.T, root, name, body string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
