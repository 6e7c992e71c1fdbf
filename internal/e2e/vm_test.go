package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pxetest"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

// bootInitScript is the init of the VMs' initramfs: it reports on the
// serial console that it runs, and the kernel command line it got.
const bootInitScript = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo ` + qemuBootMarker + `
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
`

// bootRack is rackd's side of a boot test: its data directory, with the
// machines' boot decisions cached as if from the region, and its boot
// root, with the kernel and initramfs every decision names (pxe/vmlinuz,
// pxe/initrd.gz).
type bootRack struct {
	dataDir, bootRoot string
	kernel, initrd    []byte
}

// newBootRack writes decisions (by MAC) and the boot files.
func newBootRack(t *testing.T, decisions map[string]events.BootDecision) *bootRack {
	t.Helper()
	r := &bootRack{dataDir: t.TempDir(), bootRoot: t.TempDir()}
	writeJSON(t, filepath.Join(r.dataDir, bootconfig.CacheFile), map[string]any{"stream_seq": 0, "decisions": decisions})
	var err error
	if r.kernel, err = os.ReadFile(pxetest.Kernel(t)); err != nil {
		t.Fatal(err)
	}
	r.initrd = pxetest.Initramfs(t, bootInitScript, nil)
	if err := os.MkdirAll(filepath.Join(r.bootRoot, "pxe"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"vmlinuz": r.kernel, "initrd.gz": r.initrd} {
		if err := os.WriteFile(filepath.Join(r.bootRoot, "pxe", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// bootDecision is the install decision of machine id (MAC mac): the
// rack's kernel and initramfs, with params after the console's. The
// kernel skips its check of the timer interrupt (no_timer_check): VMs
// under TCG on a busy host miss it and panic ("IO-APIC + timer doesn't
// work").
func bootDecision(mac, id string, params ...string) events.BootDecision {
	return events.BootDecision{MAC: mac, MachineID: id, Purpose: events.BootPurposeInstall, Arch: "amd64",
		Kernel: "pxe/vmlinuz", Initrd: "pxe/initrd.gz", Params: append([]string{"console=ttyS0", "panic=-1", "no_timer_check"}, params...)}
}

// start runs rackd in namespace ns at 10.20.0.2 (TFTP on :69, HTTP on
// :5248, NATS forwarded to 127.0.0.1:4222, DHCP on eth0) with the DHCP
// flags given, and waits for its DHCP server.
func (r *bootRack) start(t *testing.T, ns string, flags ...string) *proc {
	t.Helper()
	rackd := startCmd(t, "rackd", exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(binDir, "rackd"),
		"-name", "dhcp-rack", "-data-dir", r.dataDir, "-insecure-nats", "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-boot-url", "http://10.20.0.2:5248", "-tftp-addr", ":69", "-boot-root", r.bootRoot,
		"-dhcp-interface", "eth0", "-dhcp-event-interval", "200ms", "-log-level", "debug"},
		flags...)...))
	if slices.Contains(flags, "off") { // -dhcp-mode off: the site's DHCP server answers
		return rackd
	}
	eventually(t, 20*time.Second, "rackd's DHCP server", func() error {
		if !strings.Contains(rackd.Output(), "dhcp listening") {
			return os.ErrNotExist
		}
		return nil
	})
	return rackd
}

// qemuVM is a VM booting from the network, its serial console in a file.
type qemuVM struct {
	serial string
	cmd    *exec.Cmd
	out    netnstest.Buffer // QEMU's own output
	start  time.Time
	done   chan struct{}
	err    error
	took   time.Duration
}

// startVM starts QEMU (TCG, -m mem, network boot, no reboot) in namespace
// ns on tap device tap, with the firmware and NIC arguments given (the
// NIC's netdev is n0). It is killed when ctx ends.
func startVM(ctx context.Context, t *testing.T, qemu, ns, tap string, mem int, firmware []string) *qemuVM {
	t.Helper()
	vm := &qemuVM{serial: filepath.Join(t.TempDir(), "serial.log"), done: make(chan struct{})}
	vm.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, qemu, "-accel", "tcg", "-m", fmt.Sprint(mem),
		"-nographic", "-no-reboot", "-monitor", "none", "-serial", "file:" + vm.serial,
		"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no", "-boot", "n"}, firmware...)...)
	vm.cmd.Stdout, vm.cmd.Stderr = &vm.out, &vm.out
	vm.start = time.Now()
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("qemu: %v", err)
	}
	go func() {
		vm.err = vm.cmd.Wait()
		vm.took = time.Since(vm.start)
		close(vm.done)
	}()
	t.Cleanup(func() {
		_ = vm.cmd.Process.Kill()
		<-vm.done
	})
	return vm
}

// wait waits for the VM to power off (or be killed by its context) and
// reports whether it booted: its initramfs ran, and said so.
func (vm *qemuVM) wait() error {
	<-vm.done
	if vm.err != nil {
		return fmt.Errorf("qemu: %v after %s", vm.err, vm.took.Round(time.Second))
	}
	if !strings.Contains(vm.console(), qemuBootMarker) {
		return fmt.Errorf("powered off after %s without booting", vm.took.Round(time.Second))
	}
	return nil
}

// console returns what the VM wrote on its serial console so far.
func (vm *qemuVM) console() string {
	b, _ := os.ReadFile(vm.serial)
	return string(b)
}

// cmdline is the kernel command line the initramfs printed.
func (vm *qemuVM) cmdline() string {
	var c string
	for _, l := range strings.Split(vm.console(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "CMDLINE: "); ok {
			c = v
		}
	}
	return c
}

// report is what a failure message shows of the VM.
func (vm *qemuVM) report() string {
	return fmt.Sprintf("qemu:\n%s\nserial:\n%s", tail(vm.out.String(), 20), tail(vm.console(), 40))
}

// rackEvents collects the valid events a rack publishes, from a
// subscription of natsForRack, for tests that look at them all at the end.
type rackEvents struct {
	mu     sync.Mutex
	events []events.Event
	done   chan struct{}
}

// collectEvents reads sub until the test ends.
func collectEvents(t *testing.T, sub *nats.Subscription) *rackEvents {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	c := &rackEvents{done: make(chan struct{})}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); <-c.done })
	go func() {
		defer close(c.done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := sub.NextMsg(200 * time.Millisecond)
			if err != nil {
				if err == nats.ErrTimeout {
					continue
				}
				return
			}
			if e, err := v.Decode(m.Data); err == nil {
				c.mu.Lock()
				c.events = append(c.events, e)
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// transfers returns the boot_transfer events so far.
func (c *rackEvents) transfers(t *testing.T) []events.BootTransfer {
	t.Helper()
	return eventData[events.BootTransfer](t, c, events.TypeBootTransfer)
}

// leaseChanges returns the changes of the dhcp_leases_changed events so
// far.
func (c *rackEvents) leaseChanges(t *testing.T) []events.DHCPLeaseChange {
	t.Helper()
	var out []events.DHCPLeaseChange
	for _, d := range eventData[events.DHCPLeasesChanged](t, c, events.TypeDHCPLeasesChanged) {
		out = append(out, d.Changes...)
	}
	return out
}

// eventData returns the data of c's events of type typ so far.
func eventData[T any](t *testing.T, c *rackEvents, typ string) []T {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []T
	for _, e := range c.events {
		if e.Type != typ {
			continue
		}
		var d T
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}
