package rack_test

import (
	"flag"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/rack/dhcp"
)

// TestDHCPFlags: the DHCP server is off by default, its flags are rackd's,
// and a bad DHCP setting is reported with the rack's other problems.
func TestDHCPFlags(t *testing.T) {
	cfg := rack.DefaultConfig()
	cfg.Name = "r"
	if cfg.DHCP.Mode != dhcp.ModeOff {
		t.Fatalf("DHCP mode %q by default, want off", cfg.DHCP.Mode)
	}
	fs := flag.NewFlagSet("rackd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"-dhcp-mode", "proxy", "-dhcp-interface", "eth1", "-dhcp-bios-loader", "pxelinux"}); err != nil {
		t.Fatal(err)
	}
	if cfg.DHCP.Mode != dhcp.ModeProxy || cfg.DHCP.Interface != "eth1" || cfg.DHCP.BIOSLoader != dhcp.LoaderPXELinux {
		t.Fatalf("flags: %+v", cfg.DHCP)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.DHCP.UEFILoader = "elilo"
	cfg.EventBuffer = 1
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "-dhcp-uefi-loader") || !strings.Contains(err.Error(), "-event-buffer") {
		t.Fatalf("Validate: %v", err)
	}
}
