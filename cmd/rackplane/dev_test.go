package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/rack/dhcp"
)

// TestDevOnABootNetwork checks what -boot-interface fills in: the rack's
// addresses on the interface's address, and proxyDHCP there, unless a flag
// given explicitly says otherwise.
func TestDevOnABootNetwork(t *testing.T) {
	ip := netip.MustParseAddr("10.20.0.2")
	for _, c := range []struct {
		name                  string
		args                  []string
		tftp, http, boot, dif string
		mode                  dhcp.Mode
	}{
		{"loopback without it", nil, "127.0.0.1:6969", "127.0.0.1:5248", "http://127.0.0.1:5248", "", dhcp.ModeOff},
		{"boot interface", []string{"-boot-interface", "eth1"}, "10.20.0.2:69", "10.20.0.2:5248", "http://10.20.0.2:5248", "eth1", dhcp.ModeProxy},
		{"explicit flags win", []string{"-boot-interface", "eth1", "-tftp-addr", ":6970", "-rack-http-addr", ":8080",
			"-boot-url", "http://boot.example:8080", "-dhcp-mode", "off"}, ":6970", ":8080", "http://boot.example:8080", "eth1", dhcp.ModeOff},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultDevConfig()
			fs := flag.NewFlagSet("dev", flag.ContinueOnError)
			cfg.registerFlags(fs)
			if err := parse(fs, c.args, io.Discard); err != nil {
				t.Fatal(err)
			}
			cfg.set = map[string]bool{}
			fs.Visit(func(f *flag.Flag) { cfg.set[f.Name] = true })
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			got := cfg.onBootNetwork(ip)
			k := got.rack("/tmp/dev")
			if key := got.region("/tmp/dev").Secrets.KeyFile; key != "/tmp/dev/secrets.key" {
				t.Errorf("secrets key file %q, want the data directory's secrets.key", key)
			}
			if got.TFTPAddr != c.tftp || got.RackHTTPAddr != c.http || k.BootURL != c.boot || k.DHCP.Interface != c.dif || k.DHCP.Mode != c.mode {
				t.Errorf("tftp %s http %s boot url %s dhcp %s on %q; want %s %s %s %s on %q",
					got.TFTPAddr, got.RackHTTPAddr, k.BootURL, k.DHCP.Mode, k.DHCP.Interface, c.tftp, c.http, c.boot, c.mode, c.dif)
			}
		})
	}
}

// TestDevConfigErrors checks that every bad setting is named at once.
func TestDevConfigErrors(t *testing.T) {
	cfg := defaultDevConfig()
	cfg.DataDir, cfg.BootURL, cfg.DHCP.Mode = "", "tftp://x", dhcp.ModeManaged
	err := cfg.validate()
	for _, want := range []string{"-data-dir is empty", "-boot-url \"tftp://x\"", "-dhcp-mode managed: give -boot-interface"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: %v; want %q in it", err, want)
		}
	}
}

// TestDevLabFlags: -vms refuses what it cannot do before making anything,
// naming each problem: the flags that would put the rack on another
// network, and a count out of range.
func TestDevLabFlags(t *testing.T) {
	err := runDev(context.Background(), []string{"-vms", "17", "-boot-interface", "eth9", "-dhcp-mode", "proxy", "-data-dir", t.TempDir()},
		&bytes.Buffer{}, &bytes.Buffer{})
	for _, want := range []string{"-boot-interface: -vms puts the rack on the lab's own network", "-dhcp-mode: -vms puts the rack",
		"-vms 17: from 1 to 16"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("rackplane dev -vms 17 -boot-interface eth9 -dhcp-mode proxy: %v; want %q in it", err, want)
		}
	}
}
