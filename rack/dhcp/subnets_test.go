package dhcp

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// relayed is a DISCOVER from a relay on giaddr, as clients of a subnet
// the rack reaches through a router arrive.
func (h *harness) relayedDiscover(mac net.HardwareAddr, giaddr string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	return h.discover(mac, append(mods, dhcpv4.WithGatewayIP(net.ParseIP(giaddr)))...)
}

// TestRegionSubnetsChangeTheAnswer: the region's subnets are served next
// to the rack's own as soon as they are set, a reserved MAC gets its
// address and the machine's boot file, a changed reservation applies at
// once, a subnet that overlaps the rack's own is not served, and a
// subnet taken away is no longer answered.
func TestRegionSubnetsChangeTheAnswer(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	override := map[string]string{}
	h.s.env.BootOverride = func(mac string) string { return override[mac] }
	reserved := macN(7)
	gi := "10.40.0.1"
	if r := h.relayedDiscover(reserved, gi); r != nil {
		t.Fatalf("answered for a subnet nobody gave the rack: %v", r.Summary())
	}
	region := Subnet{CIDR: netip.MustParsePrefix("10.40.0.0/24"), Interface: "test0",
		Ranges:        []Range{{Start: netip.MustParseAddr("10.40.0.100"), End: netip.MustParseAddr("10.40.0.110")}},
		Router:        netip.MustParseAddr("10.40.0.1"),
		SearchDomains: []string{"lab.example.net"},
		Reservations:  []Reservation{{MAC: reserved.String(), IP: netip.MustParseAddr("10.40.0.7"), Hostname: "node7"}}}
	if err := h.s.SetRegionSubnets([]Subnet{region}); err != nil {
		t.Fatal(err)
	}
	offer := h.relayedDiscover(reserved, gi)
	if offer == nil || offer.YourIPAddr.String() != "10.40.0.7" || offer.HostName() != "node7" {
		t.Fatalf("reserved MAC offered %v, want 10.40.0.7 (node7)", offer)
	}
	if got := offer.DomainSearch(); got == nil || len(got.Labels) != 1 || got.Labels[0] != "lab.example.net" {
		t.Fatalf("search list %v, want lab.example.net", got)
	}
	if other := h.relayedDiscover(macN(8), gi); other == nil || other.YourIPAddr.String() != "10.40.0.100" {
		t.Fatalf("another MAC offered %v, want the range's first address", other)
	}
	// The machine's boot file goes to its PXE firmware.
	override[reserved.String()] = "quirk/ipxe.efi"
	pxeOffer := h.relayedDiscover(reserved, gi, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
	if pxeOffer == nil || pxeOffer.BootFileName != "quirk/ipxe.efi" {
		t.Fatalf("PXE offer boot file %q, want the machine's own", pxeOffer.BootFileName)
	}

	// The reservation changes in the region: the next offer has it.
	region.Reservations[0].IP = netip.MustParseAddr("10.40.0.9")
	if err := h.s.SetRegionSubnets([]Subnet{region}); err != nil {
		t.Fatal(err)
	}
	if offer := h.relayedDiscover(reserved, gi); offer == nil || offer.YourIPAddr.String() != "10.40.0.9" {
		t.Fatalf("after the change offered %v, want 10.40.0.9", offer)
	}

	// The rack's own subnet takes precedence over an overlapping one.
	clash := Subnet{CIDR: netip.MustParsePrefix("10.20.0.0/16"), Interface: "test0"}
	err := h.s.SetRegionSubnets([]Subnet{region, clash})
	if err == nil || !strings.Contains(err.Error(), "takes precedence") {
		t.Fatalf("overlap with the rack's own subnet: %v", err)
	}
	if got := h.s.Status().Subnets; len(got) != 2 || got[0] != "10.20.0.0/24" || got[1] != "10.40.0.0/24" {
		t.Fatalf("served %v, want the rack's own and the region's that does not clash", got)
	}

	// Taken away: not answered any more; the rack's own still is.
	if err := h.s.SetRegionSubnets(nil); err != nil {
		t.Fatal(err)
	}
	if r := h.relayedDiscover(reserved, gi); r != nil {
		t.Fatalf("answered for a subnet the region took away: %v", r.Summary())
	}
	if r := h.discover(macN(9)); r == nil || r.YourIPAddr.String() != "10.20.0.100" {
		t.Fatalf("the rack's own subnet is not served any more: %v", r)
	}
}

// TestRegionSubnetsChangeWhileServing: subnets change while packets are
// handled (run with -race); every packet gets an answer from the subnets
// of before or of after, never a crash.
func TestRegionSubnetsChangeWhileServing(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	region := Subnet{CIDR: netip.MustParsePrefix("10.40.0.0/24"), Interface: "test0",
		Ranges: []Range{{Start: netip.MustParseAddr("10.40.0.100"), End: netip.MustParseAddr("10.40.0.110")}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			var set []Subnet
			if i%2 == 0 {
				set = []Subnet{region}
			}
			if err := h.s.SetRegionSubnets(set); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}
	answered := 0
	for i := range 200 {
		d, err := dhcpv4.NewDiscovery(macN(i%20), dhcpv4.WithGatewayIP(net.ParseIP("10.40.0.1")))
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := h.s.handle(h.l, ServerPort, d.ToBytes(), peer); r != nil {
			if !strings.HasPrefix(r.YourIPAddr.String(), "10.40.0.") {
				t.Fatalf("offered %s for the region's subnet", r.YourIPAddr)
			}
			answered++
		}
	}
	<-done
	t.Logf("%d of 200 relayed DISCOVERs answered while the subnets changed", answered)
}

// TestRegionSubnetResizedWhileLeasing: the region subnet the rack's own
// address is in changes its prefix while clients lease through it, on
// the interface and through a relay (run with -race). Every client is
// answered throughout, the rack's own address is never offered, and
// each client keeps the address it was first given.
func TestRegionSubnetResizedWhileLeasing(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	rackIP := netip.MustParseAddr("10.40.0.2")
	narrow := Subnet{CIDR: netip.MustParsePrefix("10.40.0.0/24"), Interface: "test1",
		Ranges: []Range{{Start: rackIP, End: netip.MustParseAddr("10.40.0.250")}}}
	wide := narrow
	wide.CIDR = netip.MustParsePrefix("10.40.0.0/23")
	if err := h.s.SetRegionSubnets([]Subnet{narrow}); err != nil {
		t.Fatal(err)
	}
	l, err := h.s.attach("test1", rackIP)
	if err != nil {
		t.Fatal(err)
	}
	// As Listen leaves the server, without sockets: each change
	// relocates both listeners.
	h.s.mu.Lock()
	h.s.listeners, h.s.listening = []*listener{h.l, l}, true
	h.s.mu.Unlock()

	stop, done := make(chan struct{}), make(chan struct{})
	changes := 0
	go func() {
		defer close(done)
		for ; ; changes++ {
			select {
			case <-stop:
				return
			default:
			}
			set := narrow
			if changes%2 == 0 {
				set = wide
			}
			if err := h.s.SetRegionSubnets([]Subnet{set}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-done; t.Logf("%d subnet changes", changes) }()

	peer := &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}
	exchange := func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		r, _ := h.s.handle(l, ServerPort, m.ToBytes(), peer)
		return r
	}
	first := map[string]string{}
	// Each client leases twice in a row: a lease made just as the
	// subnets change must be found by the very next request.
	for i := range 1200 {
		mac := macN(i / 2 % 200)
		var mods []dhcpv4.Modifier
		if i/2%3 == 0 {
			mods = append(mods, dhcpv4.WithGatewayIP(net.ParseIP("10.40.0.1")))
		}
		d, err := dhcpv4.NewDiscovery(mac, mods...)
		if err != nil {
			t.Fatal(err)
		}
		offer := exchange(d)
		if offer == nil {
			t.Fatalf("DISCOVER %d of %s not answered", i, mac)
		}
		if got := offer.YourIPAddr.String(); got == rackIP.String() {
			t.Fatalf("DISCOVER %d of %s offered the rack's own address %s", i, mac, got)
		}
		req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
		if err != nil {
			t.Fatal(err)
		}
		ack := exchange(req)
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("REQUEST %d of %s for %s: %v", i, mac, offer.YourIPAddr, ack)
		}
		got := ack.YourIPAddr.String()
		if want, ok := first[mac.String()]; ok && got != want {
			t.Fatalf("lease %d: %s got %s, it held %s", i, mac, got, want)
		}
		first[mac.String()] = got
	}
}
