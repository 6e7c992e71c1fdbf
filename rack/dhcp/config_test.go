package dhcp

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testSubnet() Subnet {
	return Subnet{
		CIDR:       netip.MustParsePrefix("10.20.0.0/24"),
		Ranges:     []Range{{Start: netip.MustParseAddr("10.20.0.100"), End: netip.MustParseAddr("10.20.0.199")}},
		Router:     netip.MustParseAddr("10.20.0.1"),
		DNSServers: []netip.Addr{netip.MustParseAddr("10.20.0.1")},
		Domain:     "rack1.example.net",
		Reservations: []Reservation{
			{MAC: "52:54:00:12:34:56", IP: netip.MustParseAddr("10.20.0.10"), Hostname: "node10"},
		},
	}
}

func TestConfigDefaultsValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := Config{Mode: ModeManaged, Interface: "eth1", Subnets: []Subnet{testSubnet()}}
	if err := c.Validate(); err != nil {
		t.Fatalf("zero values take the defaults: %v", err)
	}
	if got := c.withDefaults(); got.LeaseTime != time.Hour || got.MaxOffers != 1024 || got.BIOSLoader != LoaderIPXE {
		t.Fatalf("withDefaults = %+v", got)
	}
}

func TestConfigValidateNamesEverySettingAndChangesNothing(t *testing.T) {
	s := testSubnet()
	s.Ranges = append(s.Ranges, Range{Start: netip.MustParseAddr("10.20.0.150"), End: netip.MustParseAddr("10.20.1.5")},
		Range{Start: netip.MustParseAddr("10.20.0.50"), End: netip.MustParseAddr("10.20.0.40")})
	s.Router = netip.MustParseAddr("192.168.0.1")
	s.Domain = "bad domain"
	s.LeaseSeconds = 5
	s.Reservations = append(s.Reservations, Reservation{MAC: "52-54-00-12-34-56", IP: netip.MustParseAddr("10.20.0.10"), Hostname: "-x"},
		Reservation{MAC: "nope", IP: netip.MustParseAddr("10.99.0.1")})
	overlap := testSubnet()
	overlap.CIDR = netip.MustParsePrefix("10.20.0.0/16")
	overlap.Ranges, overlap.Reservations, overlap.Router, overlap.DNSServers = nil, nil, netip.Addr{}, nil
	c := Config{
		Mode: ModeManaged, BIOSLoader: "grub", UEFILoader: "x", ARM64Loader: "pxelinux", HTTPURL: "ftp://x",
		ProxyPeers: []string{"a", "a"}, ProxyTakeover: time.Hour, LeaseTime: time.Second, OfferHold: time.Hour,
		DeclineHold: -1, MaxOffers: -1, EventInterval: time.Millisecond, MaxEventChanges: 99999,
		ServerIP: netip.MustParseAddr("::1"),
		Subnets:  []Subnet{s, overlap, {CIDR: netip.MustParsePrefix("10.30.0.0/24")}, {}},
	}
	before, _ := json.Marshal(c)
	err := c.Validate()
	after, _ := json.Marshal(c)
	if string(before) != string(after) {
		t.Fatal("Validate changed the configuration")
	}
	if err == nil {
		t.Fatal("Validate accepted a bad configuration")
	}
	msg := err.Error()
	for _, want := range []string{
		"-dhcp-server-ip", "-dhcp-http-url", "-dhcp-bios-loader", "-dhcp-uefi-loader", "-dhcp-arm64-loader",
		"-dhcp-proxy-peers", "-dhcp-proxy-takeover", "lease_time", "offer_hold", "decline_hold", "max_offers",
		"-dhcp-event-interval", "max_event_changes",
		"subnets[0]: ranges[1]", "subnets[0]: ranges[2]", "end before start", "router 192.168.0.1", "domain",
		"lease_seconds 5", "MAC 52:54:00:12:34:56 is reserved again", "ip 10.20.0.10: reserved again",
		"hostname \"-x\"", "reservations[2]: \"", "is not a MAC address", "reservations[2] ip 10.99.0.1",
		"subnets[1] (10.20.0.0/16) overlaps subnets[0]", "subnets[2] (10.30.0.0/24): no interface", "subnets[3]: cidr",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not name %q:\n%s", want, msg)
		}
	}
}

func TestConfigOffIgnoresTheRest(t *testing.T) {
	if err := (Config{Mode: ModeOff, BIOSLoader: "nonsense"}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Mode: "bogus"}).Validate(); err == nil || !strings.Contains(err.Error(), "-dhcp-mode") {
		t.Fatalf("bad mode: %v", err)
	}
	if err := (Config{Mode: ModeProxy}).Validate(); err == nil || !strings.Contains(err.Error(), "-dhcp-interface") {
		t.Fatalf("proxy without interface: %v", err)
	}
}

// TestSubnetJSON: the subnet is the future event payload; it must round
// trip through JSON as addresses in text.
func TestSubnetJSON(t *testing.T) {
	s := testSubnet()
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"cidr":"10.20.0.0/24"`) || !strings.Contains(string(raw), `"start":"10.20.0.100"`) {
		t.Fatalf("JSON: %s", raw)
	}
	var back Subnet
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip: %+v != %+v", back, s)
	}
}

func TestRegisterFlags(t *testing.T) {
	dir := t.TempDir()
	raw, _ := json.Marshal([]Subnet{testSubnet()})
	path := filepath.Join(dir, "subnets.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-dhcp-mode", "managed", "-dhcp-interface", "eth1", "-dhcp-subnets", path,
		"-dhcp-uefi-loader", "shim", "-dhcp-proxy-peers", "a, b", "-dhcp-server-ip", "10.20.0.2"}); err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeManaged || len(c.Subnets) != 1 || c.UEFILoader != LoaderShim || len(c.ProxyPeers) != 2 ||
		c.ServerIP != netip.MustParseAddr("10.20.0.2") {
		t.Fatalf("flags: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
