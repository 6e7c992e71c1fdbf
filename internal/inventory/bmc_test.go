package inventory

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
)

func TestParseLANAddress(t *testing.T) {
	for _, tt := range []struct {
		name, in, want, wantSubError string
	}{
		{"static address", "\x00\x11\x0a\x00\x02\x09", "10.0.2.9", ""},
		{"bytes after the address", "\x00\x11\xc0\xa8\x01\x64\x00", "192.168.1.100", ""},
		{"link-local", "\x00\x11\xa9\xfe\x00\x05", "169.254.0.5", ""},
		{"no address", "\x00\x11\x00\x00\x00\x00", "", "no address"},
		{"broadcast", "\x00\x11\xff\xff\xff\xff", "", "not a unicast"},
		{"loopback", "\x00\x11\x7f\x00\x00\x01", "", "not a unicast"},
		{"multicast", "\x00\x11\xe0\x00\x00\x01", "", "not a unicast"},
		{"parameter not supported", "\x80", "", "0x80 (parameter not supported)"},
		{"no such channel", "\xcc", "", "invalid data field"},
		{"unknown completion code", "\x42", "", "completion code 0x42"},
		{"short", "\x00\x11\x0a\x00", "", "4 bytes"},
		{"empty", "", "", "empty"},
	} {
		got, err := parseLANAddress([]byte(tt.in))
		if tt.wantSubError != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantSubError) {
				t.Errorf("%s: %v, %v; want an error with %q", tt.name, got, err, tt.wantSubError)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("%s: %v, %v; want %s", tt.name, got, err, tt.want)
		}
	}
}

// FuzzParseLANAddress: whatever a BMC answers, an address taken makes a
// valid inventory.
func FuzzParseLANAddress(f *testing.F) {
	f.Add([]byte("\x00\x11\x0a\x00\x02\x09"))
	f.Add([]byte("\x00\x11\x00\x00\x00\x00"))
	f.Add([]byte("\xc1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseLANAddress(b)
		if err != nil {
			return
		}
		if !a.Is4() || len(b) < 6 || b[0] != 0 {
			t.Fatalf("%v from %x", a, b)
		}
		inv := validInventory()
		inv.BMC = &events.InventoryBMC{IPv4: a.String()}
		if err := inv.Check(); err != nil {
			t.Fatalf("%v from %x: %v", a, b, err)
		}
	})
}

// validInventory is the smallest inventory that passes Check.
func validInventory() events.Inventory {
	inv, err := Collect("testdata/amd64-vm", "")
	if err != nil {
		panic(err)
	}
	return inv
}

// bmcSim answers Get LAN Configuration Parameters as a BMC whose LAN
// channels (by number) hold the answers given; other channels answer
// "invalid data field", as real BMCs do for channels that are not LAN.
type bmcSim struct {
	lan   map[byte]string
	fail  error // every request fails so
	asked []byte
}

func (b *bmcSim) ask(_ context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	if b.fail != nil {
		return nil, b.fail
	}
	if netfn != netfnTransport || cmd != cmdGetLANConfig || len(data) != 4 || data[1] != lanParamIP || data[2] != 0 || data[3] != 0 {
		return []byte{0xc1}, nil
	}
	b.asked = append(b.asked, data[0])
	if a, ok := b.lan[data[0]]; ok {
		return []byte(a), nil
	}
	return []byte{0xcc}, nil
}

func TestLANAddressChannels(t *testing.T) {
	for _, tt := range []struct {
		name         string
		sim          bmcSim
		want         string
		asked        string
		wantSubError string
	}{
		{"channel 1", bmcSim{lan: map[byte]string{1: "\x00\x11\x0a\x00\x00\x09", 2: "\x00\x11\x0a\x00\x00\x0a"}}, "10.0.0.9", "\x01", ""},
		{"iLO's channel 2", bmcSim{lan: map[byte]string{2: "\x00\x11\x0a\x01\x00\x07"}}, "10.1.0.7", "\x01\x02", ""},
		{"first channel without an address", bmcSim{lan: map[byte]string{1: "\x00\x11\x00\x00\x00\x00", 3: "\x00\x11\xac\x10\x00\x03"}}, "172.16.0.3", "\x01\x02\x03", ""},
		{"no address anywhere", bmcSim{lan: map[byte]string{1: "\x00\x11\x00\x00\x00\x00"}}, "", "\x01\x02\x03\x04\x05\x06\x07\x08",
			"no LAN channel has an IP address (channel 1: no address (0.0.0.0); channel 2: completion code 0xcc (invalid data field)"},
		{"no answer", bmcSim{fail: errors.New("no answer within 2s")}, "", "", "LAN channel 1: no answer within 2s"},
	} {
		sim := tt.sim
		got, err := lanAddress(context.Background(), sim.ask)
		if string(sim.asked) != tt.asked {
			t.Errorf("%s: asked channels %x, want %x", tt.name, sim.asked, tt.asked)
		}
		if tt.wantSubError != "" {
			if got != nil || err == nil || !strings.Contains(err.Error(), tt.wantSubError) {
				t.Errorf("%s: %+v, %v; want an error with %q", tt.name, got, err, tt.wantSubError)
			}
			continue
		}
		if err != nil || got == nil || got.IPv4 != tt.want || got.IPv6 != "" {
			t.Errorf("%s: %+v, %v; want %s", tt.name, got, err, tt.want)
		}
	}
}

// TestCollectMachineWithoutBMC: no device is no bmc and nothing wrong; a
// device that is no IPMI device is no bmc, the inventory whole, and the
// reason kept for the log.
func TestCollectMachineWithoutBMC(t *testing.T) {
	ctx := context.Background()
	want := validInventory()

	col, err := CollectMachine(ctx, "testdata/amd64-vm", "")
	if err != nil || col.Inventory.BMC != nil || col.BMCErr != nil {
		t.Fatalf("fixture root: bmc %+v, bmc error %v, error %v", col.Inventory.BMC, col.BMCErr, err)
	}
	missing := []string{filepath.Join(t.TempDir(), "ipmi0"), filepath.Join(t.TempDir(), "ipmi", "0")}
	col, err = collectMachine(ctx, "testdata/amd64-vm", "", missing)
	if err != nil || col.Inventory.BMC != nil || col.BMCErr != nil {
		t.Fatalf("no device: bmc %+v, bmc error %v, error %v", col.Inventory.BMC, col.BMCErr, err)
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		return
	}
	notIPMI := filepath.Join(t.TempDir(), "ipmi0")
	if err := os.WriteFile(notIPMI, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dev := range []string{notIPMI, os.DevNull} {
		col, err = collectMachine(ctx, "testdata/amd64-vm", "", append(missing, dev))
		if err != nil || col.Inventory.BMC != nil || col.BMCErr == nil || !strings.Contains(col.BMCErr.Error(), dev+": LAN channel 1: send netfn 0x0c cmd 0x02: ioctl: inappropriate ioctl") {
			t.Fatalf("%s: bmc %+v, bmc error %v, error %v", dev, col.Inventory.BMC, col.BMCErr, err)
		}
		t.Logf("%s: %v", dev, col.BMCErr)
		if col.Inventory.CPU.Threads != want.CPU.Threads || len(col.Inventory.Disks) != len(want.Disks) {
			t.Fatalf("%s: inventory %+v, want %+v", dev, col.Inventory, want)
		}
	}
}
