package handoff_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
)

var known = events.BootDecision{
	MAC: "52:54:00:12:34:56", MachineID: "m-1", Hostname: "node1", Purpose: events.BootPurposeInstall,
	Arch: "amd64", Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", ImageVer: "debian/v1",
	Params: []string{"console=ttyS0", "rackplane.token=tok-525400123456"}, PreseedURL: "http://rack/preseed/m-1",
}

var enlist = &events.BootDecision{Purpose: events.BootPurposeEnlist, Kernel: "images/enlist/linux", Initrd: "images/enlist/initrd", Params: []string{"enlist=1"}}

func tree(t *testing.T) *handofftest.Tree {
	return handofftest.Build(t, handofftest.Decisions{known.MAC: known}, bootconfig.RenderConfig{Enlist: enlist})
}

func read(t *testing.T, res *handoff.Result) string {
	t.Helper()
	b, err := io.ReadAll(res.Reader())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestResolveRoutes(t *testing.T) {
	tr := tree(t)
	tests := []struct {
		name      string
		route     string
		contains  []string
		machineID string
		version   string
	}{
		{"pxelinux.cfg/01-52-54-00-12-34-56", handoff.RouteConfig, []string{"KERNEL images/debian/v1/linux", "rackplane.token=tok-525400123456", "url=http://rack/preseed/m-1"}, "m-1", "debian/v1"},
		{"/pxelinux.cfg/01-52-54-00-12-34-56", handoff.RouteConfig, []string{"APPEND console=ttyS0"}, "m-1", "debian/v1"},
		{"pxelinux.cfg/01-AA-BB-CC-DD-EE-FF", handoff.RouteConfig, []string{"DEFAULT enlist", "KERNEL images/enlist/linux", "enlist=1"}, "", ""},
		{"pxelinux.cfg/default", handoff.RouteConfig, []string{"DEFAULT enlist"}, "", ""},
		{"grub/grub.cfg-52:54:00:12:34:56", handoff.RouteConfig, []string{"linux '/images/debian/v1/linux' 'console=ttyS0'"}, "m-1", "debian/v1"},
		{"grub/grub.cfg-01-52-54-00-12-34-56", handoff.RouteConfig, []string{"initrd '/images/debian/v1/initrd'"}, "m-1", "debian/v1"},
		{"grub.cfg-52-54-00-12-34-56", handoff.RouteConfig, []string{"menuentry 'install'"}, "m-1", "debian/v1"},
		{"grub/grub.cfg", handoff.RouteConfig, []string{"configfile /grub/grub.cfg-${net_default_mac}", "exit"}, "", ""},
		{"/GRUB/grub.cfg", handoff.RouteConfig, []string{"configfile /grub/grub.cfg-${net_default_mac}"}, "", ""},
		{"grub.cfg", handoff.RouteConfig, []string{"configfile /grub/grub.cfg-${net_default_mac}"}, "", ""},
		{"ipxe/52-54-00-12-34-56.ipxe", handoff.RouteConfig, []string{"#!ipxe", "kernel /images/debian/v1/linux console=ttyS0", "initrd /images/debian/v1/initrd"}, "m-1", "debian/v1"},
		{"ipxe/525400123456.ipxe", handoff.RouteConfig, []string{"boot"}, "m-1", "debian/v1"},
		{"ipxe/boot.ipxe", handoff.RouteConfig, []string{"chain /ipxe/${mac:hexhyp}.ipxe"}, "", ""},
		{"/debian-installer/arm64/grub/grub.cfg", handoff.RouteConfig, []string{"configfile /grub/grub.cfg-${net_default_mac}"}, "", ""},
		{`\images\debian\v1\linux`, handoff.RouteVersioned, []string{"versioned kernel v1"}, "", "images/debian/v1"},
		{"pxelinux.0", handoff.RouteRoot, []string{"pxelinux boot loader"}, "", ""},
		{"/sub/file.txt", handoff.RouteRoot, []string{"subdirectory"}, "", ""},
		{"inside-link", handoff.RouteRoot, []string{"pxelinux boot loader"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := tr.Resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Remote: "127.0.0.1:1", Name: tt.name})
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			defer tr.Resolver.Finish(res, handoff.Outcome{})
			if res.Route != tt.route || res.MachineID != tt.machineID || res.VersionID != tt.version {
				t.Errorf("route %s machine %q version %q; want %s %q %q", res.Route, res.MachineID, res.VersionID, tt.route, tt.machineID, tt.version)
			}
			body := read(t, res)
			if int64(len(body)) != res.Size {
				t.Errorf("size %d, content %d bytes", res.Size, len(body))
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("content lacks %q:\n%s", c, body)
				}
			}
		})
	}
}

func TestResolveHostile(t *testing.T) {
	tr := tree(t)
	tests := []struct {
		name  string
		route string
	}{
		{"../../etc/passwd", handoff.RouteDenied},
		{"sub/../../secret", handoff.RouteDenied},
		{"/etc/passwd", handoff.RouteNotFound}, // relative to the root: root/etc/passwd
		{"escape", handoff.RouteDenied},
		{"sub/escape-rel", handoff.RouteDenied},
		{"fifo", handoff.RouteNotFound},
		{"sub", handoff.RouteNotFound},
		{"pxelinux.0\x00../../secret", handoff.RouteDenied},
		{strings.Repeat("A", 2000), handoff.RouteDenied},
		{"missing", handoff.RouteNotFound},
		{"images/debian/v2/linux", handoff.RouteNotFound},
		{"pxelinux.cfg/C0A80001", handoff.RouteNotFound},
		{"debian-installer/arm64/grub/arm64-efi/command.lst", handoff.RouteNotFound},
		{"debian-installer/arm64/grub/grub.cfg-", handoff.RouteNotFound},
		{"", handoff.RouteDenied},
	}
	for _, tt := range tests {
		res, err := tr.Resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Remote: "127.0.0.1:1", Name: tt.name})
		if err == nil {
			body := read(t, res)
			tr.Resolver.Finish(res, handoff.Outcome{})
			t.Errorf("%q served %q", tt.name, body)
			continue
		}
		if got := handoff.RouteOf(err); got != tt.route {
			t.Errorf("%q: route %s (%v), want %s", tt.name, got, err, tt.route)
		}
		if msg := rackplane.ErrorMessage(err); strings.Contains(msg, tr.Dir) {
			t.Errorf("%q: client message leaks a path: %q", tt.name, msg)
		}
	}
	handoffs := tr.Recorder.Events(events.TypeBootHandoff)
	if len(handoffs) != len(tests) {
		t.Fatalf("%d hand-off events for %d requests", len(handoffs), len(tests))
	}
	for _, e := range handoffs {
		var d events.BootHandoff
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		if d.Route != handoff.RouteDenied && d.Route != handoff.RouteNotFound {
			t.Errorf("event route %s", d.Route)
		}
	}
}

func TestFinishEmitsTransfer(t *testing.T) {
	tr := tree(t)
	res, err := tr.Resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolHTTP, Local: "127.0.0.1:5248", Remote: "127.0.0.1:40000", Name: "ipxe/52-54-00-12-34-56.ipxe"})
	if err != nil {
		t.Fatal(err)
	}
	tr.Resolver.Finish(res, handoff.Outcome{Bytes: res.Size, BlockSize: 1468})
	ts := tr.Recorder.Events(events.TypeBootTransfer)
	if len(ts) != 1 {
		t.Fatalf("%d transfer events", len(ts))
	}
	if ts[0].Subject != "machine/m-1" {
		t.Errorf("subject %s", ts[0].Subject)
	}
	var d events.BootTransfer
	if err := ts[0].DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	if d.Bytes != res.Size || d.BlockSize != 1468 || d.HandoffID != res.ID || d.Route != handoff.RouteConfig {
		t.Errorf("transfer event %+v", d)
	}
}

// FuzzResolve feeds arbitrary names to a resolver over a tree with a
// secret outside the roots: whatever it serves must be inside them.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"pxelinux.0", "../secret", "escape", "sub/escape-rel", "/sub/file.txt", `\images\debian\v1\linux`, "images/../../secret", "pxelinux.cfg/01-52-54-00-12-34-56", "ipxe/boot.ipxe", "grub.cfg-01-aa-bb-cc-dd-ee-ff"} {
		f.Add(s)
	}
	tr := handofftest.Build(f, handofftest.Decisions{known.MAC: known}, bootconfig.RenderConfig{Enlist: enlist})
	secret, err := os.ReadFile(tr.Outside)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		res, err := tr.Resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolTFTP, Name: name})
		if err != nil {
			if c := rackplane.ErrorCode(err); c != rackplane.ENOTFOUND && c != rackplane.EFORBIDDEN {
				t.Fatalf("%q: unexpected error %v", name, err)
			}
			return
		}
		defer tr.Resolver.Finish(res, handoff.Outcome{})
		body, err := io.ReadAll(res.Reader())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(body, secret) {
			t.Fatalf("%q served the secret outside the roots", name)
		}
		if res.File != nil {
			p, err := filepath.EvalSymlinks(res.File.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(p, tr.Root+"/") && !strings.HasPrefix(p, tr.Store+"/") {
				t.Fatalf("%q served %s outside the roots", name, p)
			}
		}
	})
}
