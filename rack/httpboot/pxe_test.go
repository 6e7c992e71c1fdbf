package httpboot_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pxetest"
	tftpproto "github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/internal/tftp/tftptest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/httpboot"
	"github.com/rackplane/rackplane/rack/tftp"
)

// bootMarker is what the test initramfs prints once it runs.
const bootMarker = "RACKPLANE-PXE-BOOTED"

const initScript = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo ` + bootMarker + `
echo "CMDLINE: $(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
`

// TestPXEBootTFTP boots a QEMU VM through iPXE: the boot file is the
// generic iPXE script over TFTP, which chains to the script rendered for
// the VM's MAC, which loads kernel and initrd over TFTP.
func TestPXEBootTFTP(t *testing.T) {
	pxeBoot(t, "52:54:00:5a:00:01", false, nil)
}

// TestPXEBootTFTPThroughLoss is TestPXEBootTFTP through a relay that
// drops every 50th packet each way, or 5% at random, under BIOS iPXE
// (SeaBIOS with QEMU's iPXE ROM) and UEFI iPXE (OVMF running the ROM's
// EFI iPXE): iPXE acknowledges every block and does not ask for a
// windowsize, so rackd sends it 8 blocks ahead, and must recover every
// loss; kernel and initrd are checked whole in the transfer events.
func TestPXEBootTFTPThroughLoss(t *testing.T) {
	n := 2
	for _, uefi := range []bool{false, true} {
		for _, l := range tftptest.Standard() {
			n++
			mac := fmt.Sprintf("52:54:00:5a:00:%02x", n)
			name := "bios/" + l.Name
			if uefi {
				name = "uefi/" + l.Name
			}
			t.Run(name, func(t *testing.T) {
				var firmware []string // pxeBoot's default: BIOS iPXE
				if uefi {
					firmware = pxetest.OVMF(t, mac, pxetest.OVMFOptions{IPXEROM: true})
				}
				pxeBoot(t, mac, false, &l.Loss, firmware...)
			})
		}
	}
}

// TestPXEBootHTTP is the same boot with the iPXE scripts over TFTP and the
// kernel and initrd over HTTP.
func TestPXEBootHTTP(t *testing.T) {
	pxeBoot(t, "52:54:00:5a:00:02", true, nil)
}

// pxeBoot boots a VM with QEMU's user network, whose DHCP points iPXE at
// the rack's TFTP server (through a relay of loss, unless nil). The VM is
// BIOS iPXE on virtio-net unless firmware gives QEMU's arguments for
// another (with a NIC of MAC mac on netdev n0).
func pxeBoot(t *testing.T, mac string, overHTTP bool, loss *tftptest.Loss, firmware ...string) {
	qemu := pxetest.QEMU(t)
	kernel := pxetest.Kernel(t)
	initrd := pxetest.Initramfs(t, initScript, nil)

	// The HTTP port goes into the rendered iPXE script, so pick it first.
	httpAddr := "127.0.0.1:0"
	httpURL := ""
	if overHTTP {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		httpAddr = ln.Addr().String()
		ln.Close()
		_, port, _ := net.SplitHostPort(httpAddr)
		httpURL = "http://10.0.2.2:" + port
	}
	token := "vm-" + strings.ReplaceAll(mac, ":", "")
	version := "images/debian/pxe-" + strings.ReplaceAll(mac, ":", "")
	d := events.BootDecision{
		MAC: mac, MachineID: "pxe-vm", Purpose: events.BootPurposeInstall, Arch: "amd64",
		Kernel: version + "/vmlinuz", Initrd: version + "/initrd.gz", ImageVer: version,
		Params: []string{"console=ttyS0", "panic=-1", "rackplane.vm=" + token}, PreseedURL: "http://10.0.2.2/preseed/" + token,
	}
	tr := handofftest.Build(t, handofftest.Decisions{mac: d}, bootconfig.RenderConfig{HTTPBootURL: httpURL})
	if err := os.MkdirAll(filepath.Join(tr.Store, version), 0o755); err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tr.Store, version, "vmlinuz"), kb, 0o644)
	os.WriteFile(filepath.Join(tr.Store, version, "initrd.gz"), initrd, 0o644)

	log := slog.New(slog.DiscardHandler)
	tsrv, err := tftp.NewServer(tftp.Config{Addresses: []string{"127.0.0.1:0"}}, tr.Resolver, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := tsrv.Listen(); err != nil {
		t.Fatal(err)
	}
	hsrv, err := httpboot.NewServer(httpboot.Config{Addresses: []string{httpAddr}}, tr.Resolver, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := hsrv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tsrv.Run(ctx)
	go hsrv.Run(ctx)
	_, tport, _ := net.SplitHostPort(tsrv.Addrs()[0].String())
	var relay *tftptest.Relay
	if loss != nil {
		relay, err = tftptest.NewRelay(tsrv.Addrs()[0].String(), *loss)
		if err != nil {
			t.Fatal(err)
		}
		defer relay.Close()
		tport = strconv.Itoa(relay.Addr().Port)
	}

	serial := filepath.Join(t.TempDir(), "serial.log")
	qctx, qcancel := context.WithTimeout(ctx, 4*time.Minute)
	defer qcancel()
	if firmware == nil {
		firmware = []string{"-device", "virtio-net-pci,netdev=n0,mac=" + mac}
	}
	cmd := exec.CommandContext(qctx, qemu, append([]string{
		"-accel", "tcg", "-m", "384", "-nographic", "-no-reboot", "-monitor", "none",
		"-serial", "file:" + serial,
		"-netdev", "user,id=n0,bootfile=tftp://10.0.2.2:" + tport + "/ipxe/boot.ipxe",
		"-boot", "n"}, firmware...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	log2, _ := os.ReadFile(serial)
	if err != nil {
		t.Fatalf("qemu: %v after %s\nqemu output:\n%s\nserial:\n%s\nevents:\n%s", err, took, tail(out.String()), tail(string(log2)), eventLog(tr))
	}
	t.Logf("VM powered off after %s", took.Round(time.Second))
	if relay != nil {
		_, toServer := relay.Counts(tftptest.ToServer)
		_, toClient := relay.Counts(tftptest.ToClient)
		t.Logf("the relay dropped %d packets to the server, %d to the VM; iPXE asked for %v", toServer, toClient, relay.Requests()[0].Options)
		if toServer == 0 || toClient == 0 {
			t.Errorf("nothing dropped one way")
		}
	}
	if !strings.Contains(string(log2), bootMarker) {
		t.Fatalf("no boot marker on the serial console\nserial:\n%s\nevents:\n%s", tail(string(log2)), eventLog(tr))
	}
	var cmdline string
	for _, l := range strings.Split(string(log2), "\n") {
		if c, ok := strings.CutPrefix(strings.TrimSpace(l), "CMDLINE: "); ok {
			cmdline = c
		}
	}
	t.Logf("kernel command line: %s", cmdline)
	if !strings.Contains(cmdline, "rackplane.vm="+token) || !strings.Contains(cmdline, "url=http://10.0.2.2/preseed/"+token) {
		t.Fatalf("command line %q lacks the values rendered for %s", cmdline, mac)
	}
	// Kernel and initrd came over the protocol the config asked for.
	wantProto := events.BootProtocolTFTP
	if overHTTP {
		wantProto = events.BootProtocolHTTP
	}
	for _, f := range []string{d.Kernel, d.Initrd} {
		// Every byte went out (the VM booted it). Through loss the
		// client's last acknowledgement may be the packet lost; iPXE does
		// not repeat it, so the server, which cannot tell that from a
		// client without the last block, retries and then reports the
		// transfer unacknowledged: wait for the event that long, and take
		// it when all of the file was sent.
		_, ok := tr.Recorder.Wait(events.TypeBootTransfer, 0, time.Minute, func(e events.Event) bool {
			var bt events.BootTransfer
			return e.DecodeData(&bt) == nil && bt.Path == f && bt.Protocol == wantProto && bt.Bytes == bt.Size && bt.VersionID == version &&
				(bt.Error == "" || relay != nil && strings.Contains(bt.Error, tftpproto.ErrLastUnacknowledged.Error()))
		})
		if !ok {
			t.Errorf("no complete %s transfer of %s\n%s", wantProto, f, eventLog(tr))
		}
	}
}

func tail(s string) string {
	if len(s) > 6000 {
		return "..." + s[len(s)-6000:]
	}
	return s
}

func eventLog(tr *handofftest.Tree) string {
	var b strings.Builder
	for _, e := range tr.Recorder.Events("") {
		fmt.Fprintf(&b, "%s %s\n", events.Name(e.Type), e.Data)
	}
	return b.String()
}
