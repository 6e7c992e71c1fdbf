package ephemeral_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/ephemeral"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/schema"
)

// build builds the environment for arch into a new directory, with the
// package cache the tests share (so each test downloads nothing twice).
func build(t *testing.T, arch string) *ephemeral.Result {
	t.Helper()
	if testing.Short() {
		// Downloads Debian packages and builds an image: minutes, not
		// the quick set's seconds. CI runs it.
		t.Skip("builds the ephemeral environment from Debian packages: skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := ephemeral.Build(ctx, ephemeral.Options{Arch: arch, Out: t.TempDir(),
		CacheDir: filepath.Join(os.TempDir(), "rackplane-test-ephemeral")})
	if err != nil {
		t.Fatalf("build %s: %v", arch, err)
	}
	return res
}

// shared is one build per architecture for the tests that boot it: the
// build is reproducible (TestBuildIsReproducibleAndAManifest), and
// building it under the race detector takes a minute of CI's CPUs.
var shared struct {
	sync.Mutex
	dir string
	res map[string]*ephemeral.Result
}

func sharedBuild(t *testing.T, arch string) *ephemeral.Result {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the ephemeral environment from Debian packages: skipped with -short")
	}
	shared.Lock()
	defer shared.Unlock()
	if r := shared.res[arch]; r != nil {
		return r
	}
	if shared.dir == "" {
		dir, err := os.MkdirTemp("", "rackplane-ephemeral-test-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := ephemeral.Build(ctx, ephemeral.Options{Arch: arch, Out: filepath.Join(shared.dir, arch),
		CacheDir: filepath.Join(os.TempDir(), "rackplane-test-ephemeral")})
	if err != nil {
		t.Fatalf("build %s: %v", arch, err)
	}
	if shared.res == nil {
		shared.res = map[string]*ephemeral.Result{}
	}
	shared.res[arch] = res
	return res
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// hashes returns the sha256 of each file of dir.
func hashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		out[e.Name()] = hex.EncodeToString(s[:])
	}
	return out
}

func TestBuildIsReproducibleAndAManifest(t *testing.T) {
	a, b := sharedBuild(t, "amd64"), build(t, "amd64")
	ha, hb := hashes(t, a.Dir), hashes(t, b.Dir)
	if len(ha) != 4 {
		t.Fatalf("files %v", ha)
	}
	for n, h := range ha {
		if hb[n] != h {
			t.Errorf("%s differs between two builds: %s and %s", n, h, hb[n])
		}
		t.Logf("%-15s sha256 %s size %d", n, h, a.Sizes[n])
	}
	if a.VersionID != b.VersionID || !strings.HasPrefix(a.VersionID, "rackplane/amd64/generic/ephemeral/stable/") {
		t.Errorf("version ids %s and %s", a.VersionID, b.VersionID)
	}

	raw, err := os.ReadFile(filepath.Join(a.Dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	m, err := images.ParseManifest(set, raw)
	if err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	if len(m.Versions) != 1 || m.Versions[0].ID() != a.VersionID || len(m.Versions[0].Files) != 3 {
		t.Fatalf("manifest %+v", m)
	}
	var info ephemeral.Info
	if b, err := os.ReadFile(filepath.Join(a.Dir, ephemeral.InfoFile)); err != nil || json.Unmarshal(b, &info) != nil {
		t.Fatalf("%s: %v", ephemeral.InfoFile, err)
	}
	if info.Packages["busybox-static"] == "" || len(info.Packages) != 2 || !strings.HasSuffix(info.Kernel, "-amd64") ||
		info.Packages["linux-image-"+info.Kernel] == "" || info.Agent.SHA256 == "" {
		t.Fatalf("info %+v", info)
	}
	for _, want := range []string{"virtio_net", "virtio_blk", "virtio_pci", "e1000", "nvme", "ahci", "efivarfs", "nvme_core", "libahci",
		"ipmi_msghandler", "ipmi_devintf", "ipmi_si"} {
		if !strings.Contains(" "+strings.Join(info.Modules, " ")+" ", " "+want+" ") {
			t.Errorf("module %s missing from %v", want, info.Modules)
		}
	}
}

// TestBootsAndPowersOffAMD64 boots the built kernel and initramfs with a
// command line naming no agent address: /init brings up the NIC of
// rackplane.mac= with DHCP, prints the inventory and powers off.
//
// The VM has QEMU's own BMC on a KCS interface: the agent asks it
// through /dev/ipmi0, and it answers that it knows no LAN configuration
// (invalid command), which the agent says; the inventory has no bmc.
// (internal/e2e's TestInventoryBMC reads a BMC that has an address.)
func TestBootsAndPowersOffAMD64(t *testing.T) {
	qemu := pxetest.QEMU(t)
	res := sharedBuild(t, "amd64")
	const mac = "52:54:00:5e:00:21"
	serial := boot(t, qemu, []string{"-machine", "pc", "-device", "e1000,netdev=n0,mac=" + mac,
		"-device", "virtio-net-pci,netdev=n1,mac=52:54:00:5e:00:22", "-netdev", "user,id=n1",
		"-drive", "if=virtio,format=raw,file=" + disk(t),
		"-device", "ipmi-bmc-sim,id=bmc0", "-device", "isa-ipmi-kcs,bmc=bmc0"},
		res, "console=ttyS0 panic=-1 rackplane.mac="+mac)
	inv := inventoryOf(t, serial)
	checkInventory(t, inv, "amd64", mac, "e1000", serial)
	if !strings.Contains(serial, "DHCP on eth") || !strings.Contains(serial, "lease of 10.0.2.15") {
		t.Errorf("no DHCP lease:\n%s", serial)
	}
	const asked = "warning: bmc: /dev/ipmi0: no LAN channel has an IP address (channel 1: completion code 0xc1 (invalid command)"
	if inv.BMC != nil || !strings.Contains(serial, asked) || strings.Contains(serial, "no IPMI system interface") {
		t.Errorf("bmc %+v: want none, and the agent saying %q:\n%s", inv.BMC, asked, serial)
	}
}

// TestBootsAndPowersOffARM64 does the same on QEMU's arm64 "virt"
// machine, with virtio NICs and BOOTIF= naming the second.
func TestBootsAndPowersOffARM64(t *testing.T) {
	qemu, _ := pxetest.QEMUARM64(t)
	res := sharedBuild(t, "arm64")
	const mac = "52:54:00:5e:00:32"
	serial := boot(t, qemu, []string{"-machine", "virt", "-cpu", "cortex-a57",
		"-device", "virtio-net-pci,netdev=n1,mac=52:54:00:5e:00:31", "-netdev", "user,id=n1",
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac,
		"-drive", "if=none,id=d0,format=raw,file=" + disk(t), "-device", "virtio-blk-pci,drive=d0"},
		res, "console=ttyAMA0 panic=-1 BOOTIF=01-"+strings.ReplaceAll(mac, ":", "-"))
	inv := inventoryOf(t, serial)
	checkInventory(t, inv, "arm64", mac, "virtio_net", serial)
	// No BMC: ipmi_si finds none, and the inventory has none.
	if inv.BMC != nil || !strings.Contains(serial, "rackplane-ephemeral: no IPMI system interface (BMC) found") {
		t.Errorf("bmc %+v: want none, and /init saying there is none:\n%s", inv.BMC, serial)
	}
}

func disk(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 64<<20); err != nil {
		t.Fatal(err)
	}
	return p
}

// boot runs the VM until it powers off (QEMU exits) and returns its
// serial console; a VM still running after the bound fails t.
func boot(t *testing.T, qemu string, machine []string, res *ephemeral.Result, cmdline string) string {
	t.Helper()
	serial := filepath.Join(t.TempDir(), "serial.log")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	args := append([]string{"-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + serial, "-netdev", "user,id=n0",
		"-kernel", filepath.Join(res.Dir, ephemeral.KernelFile), "-initrd", filepath.Join(res.Dir, ephemeral.InitrdFile),
		"-append", cmdline}, machine...)
	start := time.Now()
	out, err := exec.CommandContext(ctx, qemu, args...).CombinedOutput()
	log, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("qemu (did the VM power off within 4m?): %v\n%s\nserial:\n%s", err, out, log)
	}
	t.Logf("booted, took the inventory and powered off in %s", time.Since(start).Round(time.Second))
	if !strings.Contains(string(log), "rackplane-ephemeral: powering off") {
		t.Fatalf("the VM stopped without powering off:\n%s", log)
	}
	return string(log)
}

// inventoryOf decodes what the VM printed between the inventory markers.
func inventoryOf(t *testing.T, serial string) events.Inventory {
	t.Helper()
	_, rest, ok := strings.Cut(serial, "----- BEGIN RACKPLANE INVENTORY -----")
	body, _, ok2 := strings.Cut(rest, "----- END RACKPLANE INVENTORY -----")
	if !ok || !ok2 {
		t.Fatalf("no inventory on the console:\n%s", serial)
	}
	// Kernel messages may interleave with the agent's output on the
	// console; the inventory is the line that is JSON.
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "{") {
			var inv events.Inventory
			if err := json.Unmarshal([]byte(l), &inv); err != nil {
				t.Fatalf("inventory: %v\n%s", err, l)
			}
			return inv
		}
	}
	t.Fatalf("no JSON between the inventory markers:\n%s", body)
	return events.Inventory{}
}

func checkInventory(t *testing.T, inv events.Inventory, arch, bootMAC, driver, serial string) {
	t.Helper()
	var boot []string
	for _, n := range inv.NICs {
		if n.Boot {
			boot = append(boot, n.MAC+" "+n.Driver)
		}
	}
	if inv.Architecture != arch || len(inv.NICs) != 2 || len(boot) != 1 || boot[0] != bootMAC+" "+driver ||
		len(inv.Disks) != 1 || inv.Disks[0].SizeBytes != 64<<20 {
		b, _ := json.Marshal(inv)
		t.Fatalf("inventory %s\nserial:\n%s", b, serial)
	}
	if bytes.Contains([]byte(serial), []byte("cannot load module")) {
		t.Errorf("a module failed to load:\n%s", serial)
	}
}
