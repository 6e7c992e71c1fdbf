package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/dhcp"
	"github.com/rackplane/rackplane/rack/handoff"
)

// arm64Init replaces the Debian installer's /init: it prints the kernel
// command line, brings the network up with the installer's own busybox,
// ip and kernel modules, fetches the preseed the command line names
// (url=) and prints its first line, then powers off.
const arm64Init = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "CMDLINE: $(cat /proc/cmdline)"
url=
for p in $(cat /proc/cmdline); do
	case "$p" in url=*) url="${p#url=}" ;; esac
done
cat >/tmp/udhcpc <<'EOF'
#!/bin/sh
case "$1" in
deconfig) ip link set "$interface" up ;;
bound|renew) ip -4 addr add "$ip/$subnet" dev "$interface" ;;
esac
exit 0
EOF
chmod 755 /tmp/udhcpc
modprobe virtio_pci
modprobe virtio_net
udhcpc -i eth0 -s /tmp/udhcpc -n -q -t 20 -T 2
busybox wget -q -O /tmp/preseed "$url" && echo "PRESEED: $(head -n 1 /tmp/preseed)"
poweroff -f
`

// TestRackdBootsARM64UEFI boots an arm64 UEFI VM (QEMU's virt machine,
// AAVMF, emulated with TCG) from rackd alone: rackd in managed DHCP mode
// gives the firmware (arch 11) grubaa64.efi, imported from the Debian
// installer's package; that GRUB asks for its config under its built-in
// prefix and gets the chain to its per-MAC config, which boots the
// installer's arm64 kernel with the machine's parameters and preseed URL.
// The initramfs, the installer's with a /init of the test's, fetches the
// preseed from rackd (which has it from the region, here the test) and
// prints it.
func TestRackdBootsARM64UEFI(t *testing.T) {
	vmTest(t)
	arm64Boot(t, "52:54:00:d4:c0:a4", dhcp.LoaderGRUB)
}

// TestRackdBootsARM64UEFIThroughShim is the same boot with the signed
// shim first: the firmware is given bootaa64.efi, which loads
// grubaa64.efi from rackd by itself.
func TestRackdBootsARM64UEFIThroughShim(t *testing.T) {
	vmTest(t)
	arm64Boot(t, "52:54:00:d4:c0:a5", dhcp.LoaderShim)
}

func arm64Boot(t *testing.T, mac, loader string) {
	qemu, firmware := pxetest.QEMUARM64(t)
	kernel, err := os.ReadFile(pxetest.InstallerARM64(t, "linux"))
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := os.ReadFile(pxetest.InstallerARM64(t, "initrd.gz"))
	if err != nil {
		t.Fatal(err)
	}
	initrd = append(initrd, pxetest.Overlay(arm64Init, nil)...)

	machineID := uuid.NewString()
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	vmNS, tap := seg.Tap()
	nc, sub := natsConnForRack(t, rackNS)

	// The test answers the rack's preseed requests as the region does. The
	// preseed's first line is new each run, so the console can have it only
	// from the preseed the VM fetched from rackd.
	preseedLine := "# preseed of " + machineID + " " + uuid.NewString()
	preseedAsked := make(chan map[string]string, 4)
	region := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, 5*time.Second)
	t.Cleanup(region.Close)
	if err := region.Handle(events.RegionRPCWildcard(events.MethodPreseed), "", func(_ context.Context, data []byte) (any, error) {
		var req map[string]string
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, err
		}
		preseedAsked <- req
		if req["machine_id"] != machineID {
			return nil, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", req["machine_id"])
		}
		return map[string]any{"name": "arm64", "version": 1, "content": preseedLine + "\nd-i debian-installer/locale string en_US\n"}, nil
	}); err != nil {
		t.Fatal(err)
	}

	// The rack has the machine's boot decision cached (as from the region),
	// and the installer's kernel and initramfs in its fallback boot root.
	preseedURL := "http://10.20.0.2:5248/preseed/" + machineID
	const deploymentID = "0190f0e0-0000-7000-8000-0000000000d4"
	dataDir, bootRoot := t.TempDir(), t.TempDir()
	d := events.BootDecision{MAC: mac, MachineID: machineID, Purpose: events.BootPurposeInstall, Arch: "arm64",
		Kernel: "pxe/arm64/linux", Initrd: "pxe/arm64/initrd.gz", PreseedURL: preseedURL, DeploymentID: deploymentID,
		Params: []string{"console=ttyAMA0", "panic=-1", "rackplane.dhcp=ok"}}
	writeJSON(t, filepath.Join(dataDir, bootconfig.CacheFile), map[string]any{"stream_seq": 0, "decisions": map[string]any{mac: d}})
	for name, b := range map[string][]byte{d.Kernel: kernel, d.Initrd: initrd} {
		p := filepath.Join(bootRoot, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	rackd := startCmd(t, "rackd", exec.Command("ip", "netns", "exec", rackNS, filepath.Join(binDir, "rackd"),
		"-name", "arm64-rack", "-data-dir", dataDir, "-insecure-nats", "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-boot-url", "http://10.20.0.2:5248", "-tftp-addr", ":69", "-boot-root", bootRoot,
		"-dhcp-interface", "eth0", "-dhcp-mode", "managed", "-dhcp-subnets", subnetsFile(t), "-dhcp-arm64-loader", loader,
		"-import-system-bootloaders", "-log-level", "debug"))
	// The firmware needs grubaa64.efi, which rackd imports at start.
	eventually(t, 60*time.Second, dhcp.FileGRUBaa64+" over TFTP from rackd", func() error {
		_, err := netnstest.Run(rackNS, "curl", "-sS", "--max-time", "5", "-o", os.DevNull, "tftp://127.0.0.1/"+dhcp.FileGRUBaa64)
		return err
	})
	eventually(t, 20*time.Second, "rackd's DHCP server", func() error {
		if !strings.Contains(rackd.Output(), "dhcp listening") {
			return os.ErrNotExist
		}
		return nil
	})

	// TCG emulates every arm64 instruction and GRUB fetches 70 MB over
	// TFTP: well under a minute on an idle machine, the bound is for a
	// busy one.
	serial := filepath.Join(t.TempDir(), "serial.log")
	qctx, qcancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer qcancel()
	args := append([]string{"netns", "exec", vmNS, qemu, "-accel", "tcg", "-M", "virt", "-cpu", "cortex-a57", "-m", "512",
		"-nographic", "-no-reboot", "-monitor", "none", "-serial", "file:" + serial,
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,romfile=,bootindex=0,mac=" + mac}, firmware...)
	start := time.Now()
	out, err := exec.CommandContext(qctx, "ip", args...).CombinedOutput()
	consoleBytes, _ := os.ReadFile(serial)
	console := string(consoleBytes)
	if err != nil || !strings.Contains(console, "PRESEED: "+preseedLine) {
		t.Fatalf("the VM did not boot to its preseed (%v after %s)\nqemu:\n%s\nserial:\n%s\nrackd:\n%s", err, time.Since(start).Round(time.Second),
			tail(string(out), 20), tail(console, 60), tail(rackd.Output(), 40))
	}
	t.Logf("arm64 VM booted through rackd, fetched its preseed and powered off after %s", time.Since(start).Round(time.Second))
	cmdline := ""
	for _, l := range strings.Split(console, "\n") {
		if c, ok := strings.CutPrefix(strings.TrimSpace(l), "CMDLINE: "); ok {
			cmdline = c
		}
	}
	for _, p := range d.Params {
		if !strings.Contains(" "+cmdline+" ", " "+p+" ") {
			t.Errorf("kernel command line %q lacks %q", cmdline, p)
		}
	}
	// The preseed URL carries the deployment's credential, which the
	// rack derived: the installer fetched it with that.
	if !regexp.MustCompile(` url=` + regexp.QuoteMeta(preseedURL) + `/[A-Za-z0-9_-]{43} `).MatchString(" " + cmdline + " ") {
		t.Errorf("kernel command line %q lacks the preseed URL %s/<credential>", cmdline, preseedURL)
	}

	// rackd reported each step as a boot_handoff event.
	var steps []handoffStep
	loaders := []string{dhcp.FileGRUBaa64}
	if loader == dhcp.LoaderShim {
		loaders = []string{dhcp.FileShimaa64, dhcp.FileGRUBaa64}
	}
	for _, f := range loaders {
		steps = append(steps, handoffStep{f + " from the store", func(h events.BootHandoff) bool {
			return strings.TrimPrefix(h.FileName, "/") == f && h.Route == handoff.RouteVersioned && strings.HasPrefix(h.VersionID, "bootloaders/grub-efi/arm64/")
		}})
	}
	waitHandoffs(t, sub, append(steps, []handoffStep{
		{"GRUB's config under its prefix", func(h events.BootHandoff) bool {
			return strings.TrimPrefix(h.FileName, "/") == "debian-installer/arm64/grub/grub.cfg" && h.Route == handoff.RouteConfig && h.MachineID == ""
		}},
		{"the per-MAC config", func(h events.BootHandoff) bool {
			return h.Route == handoff.RouteConfig && h.MAC == mac && h.MachineID == machineID && h.Purpose == events.BootPurposeInstall
		}},
		{"the kernel", func(h events.BootHandoff) bool {
			return strings.HasSuffix(h.FileName, d.Kernel) && h.Route == handoff.RouteRoot
		}},
		{"the initramfs", func(h events.BootHandoff) bool {
			return strings.HasSuffix(h.FileName, d.Initrd) && h.Route == handoff.RouteRoot
		}},
	}...))
	select {
	case req := <-preseedAsked:
		if req["machine_id"] != machineID || req["deployment_id"] != deploymentID || !strings.HasPrefix(req["remote"], "10.20.0.1") {
			t.Fatalf("the rack asked for the preseed of %q for %q; want %s for the VM", req["machine_id"], req["remote"], machineID)
		}
	default:
		t.Fatal("the rack never asked the region for the preseed")
	}
}

type handoffStep struct {
	what  string
	match func(events.BootHandoff) bool
}

// waitHandoffs reads boot_handoff events from sub until each step has
// matched one, in order, and logs the names asked for on the way.
func waitHandoffs(t *testing.T, sub *nats.Subscription, steps []handoffStep) {
	t.Helper()
	var seen []string
	for _, step := range steps {
		err := waitEvent(t, sub, events.TypeBootHandoff, func(e events.Event) bool {
			var h events.BootHandoff
			if err := e.DecodeData(&h); err != nil {
				t.Fatal(err)
			}
			seen = append(seen, h.Protocol+" "+h.FileName+" -> "+h.Route+" "+h.Path)
			return step.match(h)
		})
		if err != nil {
			t.Fatalf("no boot_handoff event for %s (%v); hand-offs seen:\n%s", step.what, err, strings.Join(seen, "\n"))
		}
	}
	t.Logf("hand-offs:\n%s", strings.Join(seen, "\n"))
}
