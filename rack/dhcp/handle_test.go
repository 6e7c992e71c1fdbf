package dhcp

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane/events"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type captured struct {
	mu  sync.Mutex
	evs []events.Event
}

func (c *captured) Publish(e events.Event) { c.mu.Lock(); c.evs = append(c.evs, e); c.mu.Unlock() }

const testRack = "0190a0b1-1111-7222-8333-444455556666"

var serverIP = netip.MustParseAddr("10.20.0.2")

// harness is a server with a listener and no socket: packets go through
// handle directly.
type harness struct {
	t   *testing.T
	s   *Server
	l   *listener
	clk *clock
	pub *captured
	reg *prometheus.Registry
	dir string
}

func newHarness(t *testing.T, cfg Config, dir string) *harness {
	t.Helper()
	h := &harness{t: t, clk: &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, pub: &captured{},
		reg: prometheus.NewRegistry(), dir: dir}
	s, err := New(cfg, Env{RackID: testRack, RackName: "rack-a", DataDir: dir, HTTPPort: 5248, Logger: slog.New(slog.DiscardHandler),
		Publisher: h.pub, Registerer: h.reg, Now: h.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	l, err := s.attach("test0", serverIP)
	if err != nil {
		t.Fatal(err)
	}
	h.s, h.l = s, l
	return h
}

func managedConfig() Config {
	sn := testSubnet()
	sn.Ranges = []Range{{Start: netip.MustParseAddr("10.20.0.100"), End: netip.MustParseAddr("10.20.0.102")}}
	return Config{Mode: ModeManaged, Interface: "test0", Subnets: []Subnet{sn}, DeclineHold: 10 * time.Minute}
}

func macN(n int) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, byte(n >> 8), byte(n)} }

// send hands m to the server as if received on port.
func (h *harness) send(port int, m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	h.t.Helper()
	peer := &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}
	if ci := m.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
		peer.IP = ci
	}
	return h.s.handle(h.l, port, m.ToBytes(), peer)
}

func (h *harness) discover(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		h.t.Fatal(err)
	}
	r, _ := h.send(ServerPort, d)
	return r
}

// lease runs DISCOVER, OFFER, REQUEST, ACK and returns the ACK.
func (h *harness) lease(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	h.t.Helper()
	offer := h.discover(mac, mods...)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		h.t.Fatalf("no offer for %s: %v", mac, offer)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		h.t.Fatal(err)
	}
	ack, _ := h.send(ServerPort, req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		h.t.Fatalf("no ack for %s: %v", mac, ack)
	}
	return ack
}

func TestManagedLease(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	offer := h.discover(macN(1))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("offer: %v", offer)
	}
	if got := offer.YourIPAddr.String(); got != "10.20.0.100" {
		t.Fatalf("offered %s, want the first of the range", got)
	}
	if !offer.ServerIdentifier().Equal(net.IP(serverIP.AsSlice())) || offer.IPAddressLeaseTime(0) != time.Hour ||
		!offer.Router()[0].Equal(net.ParseIP("10.20.0.1")) || !offer.DNS()[0].Equal(net.ParseIP("10.20.0.1")) ||
		offer.DomainName() != "rack1.example.net" || net.IP(offer.SubnetMask()).String() != "255.255.255.0" {
		t.Fatalf("offer options:\n%s", offer.Summary())
	}
	if offer.BootFileName != "" {
		t.Fatalf("a non-PXE client got boot file %q", offer.BootFileName)
	}
	ack := h.lease(macN(1))
	if ack.YourIPAddr.String() != "10.20.0.100" {
		t.Fatalf("ack for %s", ack.YourIPAddr)
	}
	// The lease is on disk before the ACK left.
	raw, err := os.ReadFile(filepath.Join(h.dir, LeaseFile))
	if err != nil || !strings.Contains(string(raw), `"ip":"10.20.0.100","mac":"02:00:00:00:00:01","state":"bound"`) {
		t.Fatalf("lease log: %s %v", raw, err)
	}
	// Renewing (unicast, ciaddr set) keeps it and answers to the client.
	renew, _ := dhcpv4.NewRenewFromAck(ack)
	r, dst := h.send(ServerPort, renew)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck || r.YourIPAddr.String() != "10.20.0.100" || dst.IP.String() != "10.20.0.100" {
		t.Fatalf("renew: %v to %v", r, dst)
	}
	// A reserved MAC gets its reservation and host name.
	res := h.lease(net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	if res.YourIPAddr.String() != "10.20.0.10" || res.HostName() != "node10" {
		t.Fatalf("reservation: %s %q", res.YourIPAddr, res.HostName())
	}
	if got := testutil.ToFloat64(h.s.metrics.leases.WithLabelValues("ack")); got != 3 {
		t.Fatalf("acks = %v", got)
	}
	h.s.tick()
	if got := testutil.ToFloat64(h.s.metrics.inUse.WithLabelValues("10.20.0.0/24")); got != 2 {
		t.Fatalf("leases in use = %v", got)
	}
}

func TestManagedRestartKeepsLeases(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, managedConfig(), dir)
	h.lease(macN(1))
	h.lease(macN(2))
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	// A torn last line (a crash mid-write) is skipped, not fatal.
	f, _ := os.OpenFile(filepath.Join(dir, LeaseFile), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`1234abcd {"ip":"10.20.0.1`)
	f.Close()

	h2 := newHarness(t, managedConfig(), dir)
	if got := h2.discover(macN(2)).YourIPAddr.String(); got != "10.20.0.101" {
		t.Fatalf("after a restart mac 2 is offered %s, want its lease 10.20.0.101", got)
	}
	if got := h2.discover(macN(3)).YourIPAddr.String(); got != "10.20.0.102" {
		t.Fatalf("a new client is offered %s, want the free 10.20.0.102", got)
	}
	if r := h2.discover(macN(4)); r != nil {
		t.Fatalf("pool exhausted, yet offered %s", r.YourIPAddr)
	}
	// The log was compacted at open: one line per address.
	raw, _ := os.ReadFile(filepath.Join(dir, LeaseFile))
	if n := strings.Count(string(raw), "\n"); n != 2 {
		t.Fatalf("compacted log has %d lines:\n%s", n, raw)
	}
}

func TestManagedDeclineReleaseExpiry(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	ack := h.lease(macN(1)) // .100
	// The client finds .100 in use and declines it.
	dec, _ := dhcpv4.New(dhcpv4.WithReply(ack), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack.YourIPAddr)), dhcpv4.WithOptionCopied(ack, dhcpv4.OptionServerIdentifier))
	dec.OpCode = dhcpv4.OpcodeBootRequest
	if r, _ := h.send(ServerPort, dec); r != nil {
		t.Fatalf("a DECLINE got a reply: %v", r)
	}
	if got := h.discover(macN(1)).YourIPAddr.String(); got == "10.20.0.100" {
		t.Fatal("a declined address was offered again at once")
	}
	// Release: the address is free for others.
	ack2 := h.lease(macN(1))
	rel, _ := dhcpv4.NewReleaseFromACK(ack2)
	rel.OpCode = dhcpv4.OpcodeBootRequest
	h.send(ServerPort, rel)
	if r, ok := h.s.table.lookup(addrOf(ack2.YourIPAddr)); !ok || r.State != StateReleased {
		t.Fatalf("after RELEASE: %+v", r)
	}
	// Expired leases are reused last: with .100 declined (held 10m) and
	// mac 1's released address, mac 3 gets the never-used one first.
	third := h.lease(macN(3))
	if third.YourIPAddr.Equal(ack2.YourIPAddr) {
		t.Fatalf("mac 3 got the released %s before the never-used address", third.YourIPAddr)
	}
	h.clk.Add(11 * time.Minute) // the decline hold is over
	h.clk.Add(2 * time.Hour)    // and every lease has expired
	// Free now: .100 (declined, hold over), mac 1's released address, and
	// mac 3's expired lease. Released and declined go before the expired.
	seen := map[string]bool{}
	for i := 10; i < 12; i++ {
		seen[h.lease(macN(i)).YourIPAddr.String()] = true
	}
	if seen[third.YourIPAddr.String()] {
		t.Fatalf("an expired lease was reused before free addresses: %v", seen)
	}
	if got := h.lease(macN(12)).YourIPAddr; !got.Equal(third.YourIPAddr) {
		t.Fatalf("last candidate %s, want mac 3's expired %s", got, third.YourIPAddr)
	}
}

func TestManagedRefusals(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	ack := h.lease(macN(1))
	// INIT-REBOOT for an address held by another client: NAK, broadcast.
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(macN(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack.YourIPAddr)))
	r, dst := h.send(ServerPort, req)
	if r == nil || r.MessageType() != dhcpv4.MessageTypeNak || !dst.IP.Equal(net.IPv4bcast) {
		t.Fatalf("request for another's address: %v to %v", r, dst)
	}
	// Another network's address: NAK.
	req, _ = dhcpv4.New(dhcpv4.WithHwAddr(macN(3)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("192.168.1.5"))))
	if r, _ := h.send(ServerPort, req); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("wrong network: %v", r)
	}
	// A reserved client asking for a dynamic address is moved to its own.
	req, _ = dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.20.0.101"))))
	if r, _ := h.send(ServerPort, req); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("reserved client off its reservation: %v", r)
	}
	// A client that chose another server's offer: silence, offer dropped.
	offer := h.discover(macN(4))
	sel, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.20.0.254"))))
	if r, _ := h.send(ServerPort, sel); r != nil {
		t.Fatalf("request to another server answered: %v", r)
	}
	if _, held := h.s.table.offers[macN(4).String()]; held {
		t.Fatal("offer kept after the client chose another server")
	}
	if got := testutil.ToFloat64(h.s.metrics.packets.WithLabelValues("request", outcomeNAK)); got != 3 {
		t.Fatalf("NAKs counted %v", got)
	}
}

func TestManagedBootInfo(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	offer := h.discover(macN(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	if offer.BootFileName != FileUndionly || offer.ClassIdentifier() != ClientPXE || !offer.ServerIPAddr.Equal(net.IP(serverIP.AsSlice())) ||
		offer.YourIPAddr.IsUnspecified() {
		t.Fatalf("PXE offer:\n%s", offer.Summary())
	}
}

// TestPathPrefixOption: lpxelinux.0 is told to load everything else from
// the rack's HTTP server (option 210); pxelinux.0 and iPXE are not.
func TestPathPrefixOption(t *testing.T) {
	tests := []struct {
		loader, file, prefix string
	}{
		{LoaderLPXELinux, FileLPXELinux, "http://" + serverIP.String() + ":5248/"},
		{LoaderPXELinux, FilePXELinux, ""},
		{LoaderIPXE, FileUndionly, ""},
	}
	for _, tt := range tests {
		cfg := managedConfig()
		cfg.BIOSLoader = tt.loader
		h := newHarness(t, cfg, t.TempDir())
		offer := h.discover(macN(1), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
		got := string(offer.GetOneOption(dhcpv4.OptionPXELinuxPathPrefix))
		if offer.BootFileName != tt.file || got != tt.prefix {
			t.Errorf("loader %s: file %q, option 210 %q; want %q, %q", tt.loader, offer.BootFileName, got, tt.file, tt.prefix)
		}
	}
}

// TestOffersBounded: a flood of DISCOVERs from new MACs never holds more
// than MaxOffers offers.
func TestOffersBounded(t *testing.T) {
	cfg := managedConfig()
	cfg.Subnets[0].Ranges = []Range{{Start: netip.MustParseAddr("10.20.0.20"), End: netip.MustParseAddr("10.20.0.250")}}
	cfg.MaxOffers = 16
	h := newHarness(t, cfg, t.TempDir())
	answered := 0
	for i := range 1000 {
		if h.discover(macN(i)) != nil {
			answered++
		}
	}
	if answered != 16 || len(h.s.table.offers) != 16 || len(h.s.table.records) != 0 {
		t.Fatalf("answered %d, offers %d, records %d", answered, len(h.s.table.offers), len(h.s.table.records))
	}
	h.clk.Add(2 * time.Minute) // offers expire: new clients are served again
	if h.discover(macN(5000)) == nil {
		t.Fatal("no offer after the old ones expired")
	}
}

func proxyConfig() Config {
	return Config{Mode: ModeProxy, Interface: "test0"}
}

func pxeMods(arch iana.Arch, vendor string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)), dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, make([]byte, 16)...))}
}

func TestProxy(t *testing.T) {
	h := newHarness(t, proxyConfig(), t.TempDir())
	if r := h.discover(macN(1)); r != nil {
		t.Fatalf("a non-PXE client was answered: %v", r)
	}
	offer := h.discover(macN(2), pxeMods(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016")...)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("PXE client: %v", offer)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("proxy offer hands out an address:\n%s", offer.Summary())
	}
	if offer.BootFileName != FileSNPOnly || offer.ClassIdentifier() != ClientPXE || !offer.ServerIPAddr.Equal(net.IP(serverIP.AsSlice())) ||
		!offer.ServerIdentifier().Equal(net.IP(serverIP.AsSlice())) || len(offer.GetOneOption(dhcpv4.OptionClientMachineIdentifier)) != 17 ||
		string(offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation)) != "\x06\x01\x08\xff" {
		t.Fatalf("proxy offer:\n%s", offer.Summary())
	}
	// The client's REQUEST to 4011, unicast from its new address.
	req, _ := dhcpv4.NewRequestFromOffer(offer, append(pxeMods(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016"),
		dhcpv4.WithClientIP(net.ParseIP("10.20.0.150")))...)
	peer := &net.UDPAddr{IP: net.ParseIP("10.20.0.150"), Port: 4011}
	ack, dst := h.s.handle(h.l, PXEPort, req.ToBytes(), peer)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != FileSNPOnly || dst != peer {
		t.Fatalf("4011: %v to %v", ack, dst)
	}
	// The same REQUEST on 67 addressed to the site's server: not ours.
	req.UpdateOption(dhcpv4.OptServerIdentifier(net.ParseIP("10.20.0.1")))
	if r, _ := h.send(ServerPort, req); r != nil {
		t.Fatalf("request to the site's server answered: %v", r)
	}
	// HTTP boot: a URL and option 60 HTTPClient.
	hb := h.discover(macN(3), pxeMods(iana.EFI_X86_64_HTTP, "HTTPClient:Arch:00016:UNDI:003001")...)
	if hb == nil || hb.BootFileName != "http://10.20.0.2:5248/snponly.efi" || hb.ClassIdentifier() != ClientHTTP {
		t.Fatalf("HTTP boot:\n%v", hb)
	}
	h.s.tick()
	if len(h.pub.evs) != 1 {
		t.Fatalf("%d events, want 1", len(h.pub.evs))
	}
	var data events.DHCPLeasesChanged
	if err := h.pub.evs[0].DecodeData(&data); err != nil {
		t.Fatal(err)
	}
	if len(data.Changes) != 3 || data.Ignored[ReasonNotNetboot] != 1 || data.Ignored[ReasonOtherServer] != 1 {
		t.Fatalf("event: %+v", data)
	}
	validate(t, h.pub.evs[0])
}

func validate(t *testing.T, e events.Event) {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(e); err != nil {
		t.Fatalf("event breaks its schema: %v", err)
	}
}

func TestProxyPeers(t *testing.T) {
	cfg := proxyConfig()
	cfg.ProxyPeers = []string{"rack-a", "rack-b"}
	h := newHarness(t, cfg, t.TempDir()) // this is rack-a
	var mine, theirs net.HardwareAddr
	for i := 0; mine == nil || theirs == nil; i++ {
		if ProxyOwner(cfg.ProxyPeers, macN(i).String()) == "rack-a" {
			mine = macN(i)
		} else {
			theirs = macN(i)
		}
	}
	mods := pxeMods(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001")
	if h.discover(mine, mods...) == nil {
		t.Fatal("the owner did not answer")
	}
	if r := h.discover(theirs, mods...); r != nil {
		t.Fatal("a rack answered a client another rack owns")
	}
	// The client has been trying for 3s by its own count: everyone answers.
	d, _ := dhcpv4.NewDiscovery(theirs, mods...)
	d.NumSeconds = 3
	if r, _ := h.send(ServerPort, d); r == nil {
		t.Fatal("no takeover on secs >= 3")
	}
	// Firmware that leaves secs at 0: the rack's own count takes over.
	h.clk.Add(2 * time.Second)
	if h.discover(theirs, mods...) != nil {
		t.Fatal("takeover after 2s, want 3s")
	}
	h.clk.Add(2 * time.Second)
	if h.discover(theirs, mods...) == nil {
		t.Fatal("no takeover after 4s of asking")
	}
}

func TestMalformedCountedAndServerGoesOn(t *testing.T) {
	h := newHarness(t, proxyConfig(), t.TempDir())
	junk := [][]byte{nil, {1}, make([]byte, 240), []byte(strings.Repeat("x", 600))}
	d, _ := dhcpv4.NewDiscovery(macN(1), pxeMods(iana.INTEL_X86PC, "PXEClient")...)
	good := d.ToBytes()
	junk = append(junk, good[:len(good)-20], append(append([]byte{}, good[:240]...), 53, 200)) // truncated; option running off the end
	reply := *d
	reply.OpCode = dhcpv4.OpcodeBootReply
	junk = append(junk, reply.ToBytes())
	for _, j := range junk {
		if r, _ := h.s.handle(h.l, ServerPort, j, nil); r != nil {
			t.Fatalf("junk %x answered", j)
		}
	}
	if got := testutil.ToFloat64(h.s.metrics.malformed); got < float64(len(junk)-1) {
		t.Fatalf("malformed = %v of %d", got, len(junk))
	}
	if r, _ := h.s.handle(h.l, ServerPort, good, nil); r == nil {
		t.Fatal("a good packet after junk is not answered")
	}
}

func TestReporterBounded(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	r := newReporter(ModeManaged, 4, now)
	for i := range 100 {
		r.change(events.DHCPLeaseChange{Action: events.DHCPOffered, MAC: macN(i % 10).String(), IP: fmt.Sprintf("10.0.0.%d", i%10), At: now})
		r.ignore(ReasonNotNetboot)
	}
	r.malformedPacket()
	data := r.flush(now.Add(time.Second))
	if len(data.Changes) != 4 || data.MoreChanges != 60 || data.Ignored[ReasonNotNetboot] != 100 || data.Malformed != 1 {
		t.Fatalf("report: %d changes, %d more, %v ignored", len(data.Changes), data.MoreChanges, data.Ignored)
	}
	for _, c := range data.Changes {
		if c.Count != 10 {
			t.Fatalf("change %+v not coalesced", c)
		}
	}
	if r.flush(now.Add(2*time.Second)) != nil {
		t.Fatal("an empty interval made an event")
	}
	e, err := events.New(events.RackSource(testRack), events.TypeDHCPLeasesChanged, events.RackStreamName(testRack), now, data)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, e)
}

// TestLeaseLogCompactsWhileRunning: renewals append a line each, and the
// log is rewritten once it holds far more lines than leases.
func TestLeaseLogCompactsWhileRunning(t *testing.T) {
	h := newHarness(t, managedConfig(), t.TempDir())
	ack := h.lease(macN(1))
	for range 1500 {
		renew, _ := dhcpv4.NewRenewFromAck(ack)
		if r, _ := h.send(ServerPort, renew); r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("renew: %v", r)
		}
	}
	raw, err := os.ReadFile(filepath.Join(h.dir, LeaseFile))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), "\n"); n > 1025 {
		t.Fatalf("lease log has %d lines for one lease", n)
	}
	recs, bad, err := ParseLeaseLog(strings.NewReader(string(raw)))
	if err != nil || bad != 0 || len(recs) != 1 || recs[addrOf(ack.YourIPAddr)].State != StateBound {
		t.Fatalf("after compaction: %v, %d bad, %v", recs, bad, err)
	}
}

// TestProxyFloodBounded: PXE DISCOVERs from 20000 MACs that never come
// back leave the proxy server's state as small as it was: the event
// report holds at most MaxEventChanges entries, the takeover table is of
// fixed size, and nothing else is kept per client.
func TestProxyFloodBounded(t *testing.T) {
	cfg := proxyConfig()
	cfg.ProxyPeers = []string{"rack-a", "rack-b"}
	h := newHarness(t, cfg, t.TempDir())
	mods := pxeMods(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001")
	answered := 0
	for i := range 20000 {
		if h.discover(macN(i), mods...) != nil {
			answered++
		}
	}
	if answered == 0 || answered == 20000 {
		t.Fatalf("answered %d of 20000: the owner rule did not split them", answered)
	}
	h.s.report.mu.Lock()
	n, more := len(h.s.report.changes), h.s.report.more
	h.s.report.mu.Unlock()
	if n != h.s.cfg.MaxEventChanges || more != int64(answered-n) {
		t.Fatalf("report holds %d changes and counts %d more, for %d answers", n, more, answered)
	}
}
