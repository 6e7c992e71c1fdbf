package tftp_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/tftp"
)

const testMAC = "52:54:00:12:34:56"

var decision = events.BootDecision{
	MAC: testMAC, MachineID: "m-1", Purpose: events.BootPurposeInstall,
	Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", ImageVer: "debian/v1",
	Params: []string{"console=ttyS0", "rackplane.token=tok-525400123456"},
}

// start runs a TFTP server over resolver on a free loopback port.
func start(t *testing.T, resolver *handoff.Resolver, cfg tftp.Config) string {
	t.Helper()
	cfg.Addresses = []string{"127.0.0.1:0"}
	srv, err := tftp.NewServer(cfg, resolver, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	return srv.Addrs()[0].String()
}

// startOn runs a TFTP server over resolver on a free loopback port, its
// metrics in reg.
func startOn(t *testing.T, resolver *handoff.Resolver, reg prometheus.Registerer) string {
	t.Helper()
	srv, err := tftp.NewServer(tftp.Config{Addresses: []string{"127.0.0.1:0"}}, resolver, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	return srv.Addrs()[0].String()
}

func tree(t *testing.T) *handofftest.Tree {
	return handofftest.Build(t, handofftest.Decisions{testMAC: decision}, bootconfig.RenderConfig{})
}

// fetchers run real TFTP clients; each writes the file to out.
var fetchers = []struct {
	name    string
	blksize int // expected negotiated block size
	cmd     func(host, port, name, out string) *exec.Cmd
}{
	{"curl-512", 512, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("curl", "-sS", "--tftp-blksize", "512", "-o", o, "tftp://"+net.JoinHostPort(h, p)+"/"+n)
	}},
	{"curl-1468", 1468, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("curl", "-sS", "--tftp-blksize", "1468", "-o", o, "tftp://"+net.JoinHostPort(h, p)+"/"+n)
	}},
	{"atftp", 512, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("atftp", "-g", "-r", n, "-l", o, h, p)
	}},
	{"atftp-blksize-1428", 1428, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("atftp", "--option", "blksize 1428", "--option", "tsize 0", "-g", "-r", n, "-l", o, h, p)
	}},
	{"atftp-windowsize-8", 1428, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("atftp", "--option", "windowsize 8", "--option", "blksize 1428", "--option", "tsize 0", "-g", "-r", n, "-l", o, h, p)
	}},
	{"busybox", 512, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("busybox", "tftp", "-g", "-r", n, "-l", o, h, p)
	}},
	{"busybox-1468", 1468, func(h, p, n, o string) *exec.Cmd {
		return exec.Command("busybox", "tftp", "-b", "1468", "-g", "-r", n, "-l", o, h, p)
	}},
}

// TestRealClients fetches files with the TFTP clients of .ci/packages, so
// it is not in the quick set.
func TestRealClients(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the TFTP clients of .ci/packages: skipped with -short")
	}
	need(t, "curl", "curl")
	need(t, "atftp", "atftp")
	need(t, "busybox", "busybox-static")
	for _, window := range []uint{1, tftp.DefaultWindow} {
		t.Run(fmt.Sprintf("window-%d", window), func(t *testing.T) {
			tr := tree(t)
			files := map[string][]byte{
				"big.bin":      tr.WriteFile(t, "big.bin", 3<<20+123),
				"exact512.bin": tr.WriteFile(t, "exact512.bin", 512*64),
				"empty.bin":    tr.WriteFile(t, "empty.bin", 0),
			}
			res, err := tr.Resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Name: "ipxe/52-54-00-12-34-56.ipxe"})
			if err != nil {
				t.Fatal(err)
			}
			files["ipxe/52-54-00-12-34-56.ipxe"] = res.Content
			tr.Resolver.Finish(res, handoff.Outcome{})
			addr := start(t, tr.Resolver, tftp.Config{Window: window})
			host, port, _ := net.SplitHostPort(addr)
			for _, f := range fetchers {
				for name, want := range files {
					out := filepath.Join(t.TempDir(), "out")
					before := len(tr.Recorder.Events(events.TypeBootTransfer))
					cmd := f.cmd(host, port, name, out)
					if b, err := cmd.CombinedOutput(); err != nil {
						t.Errorf("%s %s: %v\n%s", f.name, name, err, b)
						continue
					}
					got, err := os.ReadFile(out)
					if err != nil {
						t.Errorf("%s %s: %v", f.name, name, err)
						continue
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s %s: got %d bytes, want %d (content differs)", f.name, name, len(got), len(want))
					}
					if name != "big.bin" {
						continue
					}
					ev, ok := tr.Recorder.Wait(events.TypeBootTransfer, before, 2*time.Second, func(e events.Event) bool {
						var d events.BootTransfer
						return e.DecodeData(&d) == nil && d.FileName == "big.bin" && d.Bytes == int64(len(want)) && d.BlockSize == f.blksize && d.Error == ""
					})
					if !ok {
						t.Errorf("%s: no transfer event for big.bin with block size %d", f.name, f.blksize)
					} else {
						t.Logf("%s: %s", f.name, ev.Data)
					}
				}
			}
		})
	}
}

// exchange sends one raw packet to addr and returns the first packet
// received back, or nil if none came within wait.
// send sends pkt to addr from a new socket, closed at cleanup.
func send(t *testing.T, addr string, pkt []byte) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ua, _ := net.ResolveUDPAddr("udp", addr)
	if _, err := c.WriteTo(pkt, ua); err != nil {
		t.Fatal(err)
	}
	return c
}

// receive returns the packet c receives within wait, or nil.
func receive(c net.PacketConn, wait time.Duration) []byte {
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65536)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func rq(op uint16, name, mode string) []byte {
	b := binary.BigEndian.AppendUint16(nil, op)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, mode...)
	return append(b, 0)
}

func TestHostileRequests(t *testing.T) {
	need(t, "curl", "curl")
	tr := tree(t)
	secret, _ := os.ReadFile(tr.Outside)
	addr := start(t, tr.Resolver, tftp.Config{Timeout: 300 * time.Millisecond, Retries: 1})
	tests := []struct {
		name   string
		pkt    []byte
		reply  bool   // a TFTP ERROR packet is expected (else the packet is dropped)
		event  string // event type the attempt must produce
		reason string // route of the hand-off, or reason of the rejection
	}{
		{"parent", rq(1, "../../etc/passwd", "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"parent-backslash", rq(1, `..\..\secret`, "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"absolute", rq(1, "/etc/passwd", "octet"), true, events.TypeBootHandoff, handoff.RouteNotFound},
		{"absolute-secret", rq(1, tr.Outside, "octet"), true, events.TypeBootHandoff, handoff.RouteNotFound},
		{"symlink-escape", rq(1, "escape", "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"symlink-escape-relative", rq(1, "sub/escape-rel", "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"nul-in-name", rq(1, "pxelinux.0\x00/../../secret", "octet"), true, events.TypeBootRequestRejected, "malformed"},
		{"control-in-name", rq(1, "pxelinux.0\n", "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"name-2000-bytes", rq(1, strings.Repeat("A", 2000), "octet"), false, events.TypeBootRequestRejected, "malformed"},
		{"name-400-bytes-dirs", rq(1, strings.Repeat("../", 130), "octet"), true, events.TypeBootHandoff, handoff.RouteDenied},
		{"write-request", rq(2, "pxelinux.0", "octet"), true, events.TypeBootRequestRejected, "write_request"},
		{"unknown-opcode", []byte("\x00\x09garbage"), false, events.TypeBootRequestRejected, "malformed"},
		{"short-packet", []byte("\x00"), false, events.TypeBootRequestRejected, "malformed"},
		{"stray-ack", []byte("\x00\x04\x00\x01"), false, events.TypeBootRequestRejected, "malformed"},
		{"rrq-no-mode", []byte("\x00\x01pxelinux.0"), false, events.TypeBootRequestRejected, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tr.Recorder.Events(tt.event))
			c := send(t, addr, tt.pkt)
			decided := func() bool {
				_, ok := tr.Recorder.Wait(tt.event, before, 2*time.Second, func(e events.Event) bool {
					var d struct{ Route, Reason string }
					e.DecodeData(&d)
					return d.Route == tt.reason || d.Reason == tt.reason
				})
				return ok
			}
			var reply []byte
			var ok bool
			if tt.reply {
				reply = receive(c, time.Second)
				ok = decided()
			} else {
				// A packet to drop: once the server has recorded its
				// decision, a reply would already be on its way.
				ok = decided()
				reply = receive(c, 100*time.Millisecond)
			}
			switch {
			case reply == nil && tt.reply:
				t.Errorf("no reply, want a TFTP error")
			case reply != nil && binary.BigEndian.Uint16(reply) != 5:
				t.Errorf("reply opcode %d (%q), want an error", binary.BigEndian.Uint16(reply), reply)
			case reply != nil && !tt.reply:
				t.Errorf("reply %q, want the packet dropped", reply)
			}
			if bytes.Contains(reply, secret) {
				t.Fatalf("served the secret")
			}
			if reply != nil {
				t.Logf("error %d: %q", binary.BigEndian.Uint16(reply[2:]), reply[4:])
			}
			if !ok {
				t.Errorf("no %s event with %s", tt.event, tt.reason)
			}
		})
	}
	// The server keeps serving.
	out := filepath.Join(t.TempDir(), "pxelinux.0")
	host, port, _ := net.SplitHostPort(addr)
	if b, err := exec.Command("curl", "-sS", "-o", out, "tftp://"+net.JoinHostPort(host, port)+"/pxelinux.0").CombinedOutput(); err != nil {
		t.Fatalf("curl after hostile requests: %v\n%s", err, b)
	}
	if got, _ := os.ReadFile(out); string(got) != "pxelinux boot loader\n" {
		t.Fatalf("after hostile requests got %q", got)
	}
}

func TestMetrics(t *testing.T) {
	need(t, "curl", "curl")
	tr := tree(t)
	reg := prometheus.NewRegistry()
	addr := startOn(t, tr.Resolver, reg)
	want := tr.WriteFile(t, "m.bin", 100000)
	for _, name := range []string{"m.bin", "missing", "escape"} {
		exec.Command("curl", "-sS", "-o", filepath.Join(t.TempDir(), "out"), "tftp://"+addr+"/"+name).Run()
	}
	tr.Recorder.Wait(events.TypeBootTransfer, 0, 2*time.Second, func(events.Event) bool { return true })
	checks := []struct {
		g      prometheus.Gatherer
		name   string
		labels map[string]string
		want   float64
	}{
		{reg, "rackplane_tftp_sent_bytes_total", nil, float64(len(want))},
		{reg, "rackplane_tftp_transfers_in_flight", nil, 0},
		{reg, "rackplane_tftp_errors_total", map[string]string{"kind": "handoff"}, 2},
		{tr.Registry, "rackplane_boot_handoff_seconds", map[string]string{"route": "root"}, 1},
		{tr.Registry, "rackplane_boot_handoff_seconds", map[string]string{"route": "not_found"}, 1},
		{tr.Registry, "rackplane_boot_handoff_seconds", map[string]string{"route": "denied"}, 1},
		{tr.Registry, "rackplane_boot_transfers_total", map[string]string{"protocol": "tftp", "result": "ok"}, 1},
	}
	for _, c := range checks {
		if got := metrictest.Value(t, c.g, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestSizeQueryIsNoFailedTransfer asks a file's size the way UEFI PXE
// firmware does (a request with tsize, ERROR 8 in answer to the OACK),
// then fetches the file: the rack counts a size query and one transfer,
// which went well, and no failed transfer.
func TestSizeQueryIsNoFailedTransfer(t *testing.T) {
	need(t, "curl", "curl")
	tr := tree(t)
	reg := prometheus.NewRegistry()
	addr := startOn(t, tr.Resolver, reg)
	want := tr.WriteFile(t, "loader.efi", 30000)

	c := converse(t, addr)
	c.rrq("loader.efi", "tsize", "0", "blksize", "1468")
	if opts := c.oack(2 * time.Second); opts["tsize"] != fmt.Sprint(len(want)) {
		t.Fatalf("OACK %v: want tsize %d", opts, len(want))
	}
	c.send(append([]byte{0, 5, 0, 8}, "User aborted the transfer\x00"...))

	out := filepath.Join(t.TempDir(), "out")
	if b, err := exec.Command("curl", "-sS", "-o", out, "tftp://"+addr+"/loader.efi").CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, b)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatalf("curl got %d bytes, want %d", len(got), len(want))
	}
	if _, ok := tr.Recorder.Wait(events.TypeBootTransfer, 0, 2*time.Second, func(events.Event) bool { return true }); !ok {
		t.Fatal("no boot_transfer event")
	}
	for _, e := range tr.Recorder.Events(events.TypeBootTransfer) {
		var bt events.BootTransfer
		if err := e.DecodeData(&bt); err != nil {
			t.Fatal(err)
		}
		if bt.Error != "" || bt.Bytes != int64(len(want)) {
			t.Errorf("transfer %+v: want one whole transfer of %d bytes", bt, len(want))
		}
	}
	checks := []struct {
		g      prometheus.Gatherer
		name   string
		labels map[string]string
		want   float64
	}{
		{reg, "rackplane_tftp_size_queries_total", nil, 1},
		{reg, "rackplane_tftp_errors_total", map[string]string{"kind": "transfer"}, 0},
		{tr.Registry, "rackplane_boot_transfers_total", map[string]string{"protocol": "tftp", "result": "ok"}, 1},
		{tr.Registry, "rackplane_boot_transfers_total", map[string]string{"protocol": "tftp", "result": "error"}, 0},
	}
	for _, c := range checks {
		if got := metrictest.Value(t, c.g, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestLogsBoundAddresses: a server asked for port 0 logs the port it got,
// which is where clients reach it.
func TestLogsBoundAddresses(t *testing.T) {
	var log handofftest.Log
	srv, err := tftp.NewServer(tftp.Config{Addresses: []string{"127.0.0.1:0"}}, tree(t).Resolver, log.Logger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	log.Wait(t, `msg="tftp serving"`, "addresses=["+srv.Addrs()[0].String()+"]")
}
