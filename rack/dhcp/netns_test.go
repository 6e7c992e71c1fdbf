package dhcp

// Tests against real DHCP peers (busybox udhcpc, dnsmasq, and clients
// crafted with insomniacslk/dhcp's nclient4) on a bridge of network
// namespaces (internal/netnstest) created and removed by each test.
// Nothing touches the host's own interfaces, and traffic stays on the
// bridge.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
)

// rackServer runs a DHCP server in namespace ns until the test ends or
// stop is called; stop returns once Run has.
type rackServer struct {
	s    *Server
	pub  *captured
	reg  *prometheus.Registry
	stop func()
}

func startServer(t *testing.T, ns string, cfg Config, name, dataDir string) *rackServer {
	t.Helper()
	rs := &rackServer{pub: &captured{}, reg: prometheus.NewRegistry()}
	var err error
	rs.s, err = New(cfg, Env{RackID: testRack, RackName: name, DataDir: dataDir, HTTPPort: 5248,
		Publisher: rs.pub, Registerer: rs.reg,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("rack", name)})
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(ns, rs.s.Listen); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.s.Run(ctx) }()
	var once sync.Once
	rs.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return 10s after its context ended")
			}
		})
	}
	t.Cleanup(rs.stop)
	return rs
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// udhcpcScript records each event of busybox udhcpc as one line of out,
// and configures the address it is given, as a real client does.
const udhcpcScript = `#!/bin/sh
echo "$1 ip=$ip subnet=$subnet router=$router dns=$dns domain=$domain hostname=$hostname serverid=$serverid lease=$lease" >> %s
case "$1" in
bound) /sbin/ip addr flush dev "$interface"; /sbin/ip addr add "$ip/$subnet" dev "$interface" ;;
esac
`

// udhcpcEvents returns the lines of out that start with event.
func udhcpcEvents(out, event string) []map[string]string {
	raw, _ := os.ReadFile(out)
	var evs []map[string]string
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != event {
			continue
		}
		m := map[string]string{}
		for _, f := range fields[1:] {
			k, v, _ := strings.Cut(f, "=")
			m[k] = v
		}
		evs = append(evs, m)
	}
	return evs
}

// TestNetnsManagedUdhcpc: busybox udhcpc gets an address of the range
// with the subnet's options, a reserved MAC gets its reservation, and a
// lease survives a restart of the server: the client's unicast renew is
// acknowledged with the same address.
func TestNetnsManagedUdhcpc(t *testing.T) {
	busybox := netnstest.Need(t, "busybox", "busybox-static")
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	clientNS := seg.Host("client", "02:00:00:00:aa:01", "")
	sn := testSubnet()
	sn.DNSServers = []netip.Addr{netip.MustParseAddr("10.20.0.53")}
	cfg := Config{Mode: ModeManaged, Interface: "eth0", Subnets: []Subnet{sn}, EventInterval: 200 * time.Millisecond}
	dataDir := t.TempDir()
	srv := startServer(t, rackNS, cfg, "rack-a", dataDir)

	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	script := filepath.Join(dir, "udhcpc.script")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(udhcpcScript, out)), 0o755); err != nil {
		t.Fatal(err)
	}
	// A client that stays, to renew later.
	udhcpc, log := netnstest.Start(t, clientNS, busybox, "udhcpc", "-f", "-i", "eth0", "-t", "5", "-T", "1", "-s", script)
	if !netnstest.WaitFor(15*time.Second, func() bool { return len(udhcpcEvents(out, "bound")) > 0 }) {
		t.Fatalf("udhcpc got no lease:\n%s", log)
	}
	b := udhcpcEvents(out, "bound")[0]
	ip := netip.MustParseAddr(b["ip"])
	if !sn.CIDR.Contains(ip) || ip.Less(sn.Ranges[0].Start) || sn.Ranges[0].End.Less(ip) {
		t.Fatalf("leased %s, outside the range", ip)
	}
	if b["router"] != "10.20.0.1" || b["dns"] != "10.20.0.53" || b["domain"] != "rack1.example.net" ||
		b["subnet"] != "255.255.255.0" || b["serverid"] != "10.20.0.2" || b["lease"] != "3600" {
		t.Fatalf("options: %v", b)
	}

	// Restart the server on the same data directory; the client renews
	// (SIGUSR1: a unicast REQUEST from its address) and keeps its address.
	srv.stop()
	srv = startServer(t, rackNS, cfg, "rack-a", dataDir)
	if err := udhcpc.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if !netnstest.WaitFor(15*time.Second, func() bool { return len(udhcpcEvents(out, "renew")) > 0 }) {
		t.Fatalf("no renewal after the restart:\n%s", log)
	}
	if r := udhcpcEvents(out, "renew")[0]; r["ip"] != ip.String() {
		t.Fatalf("renewed %s, want the same %s", r["ip"], ip)
	}
	_ = udhcpc.Process.Kill()

	// A reserved MAC gets its reservation and host name.
	seg.IP("-n", clientNS, "link", "set", "eth0", "down")
	seg.IP("-n", clientNS, "link", "set", "eth0", "address", sn.Reservations[0].MAC)
	seg.IP("-n", clientNS, "link", "set", "eth0", "up")
	cmd := exec.Command("ip", "netns", "exec", clientNS, busybox, "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "5", "-T", "1", "-s", script)
	if o, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc with the reserved MAC: %v\n%s", err, o)
	}
	bs := udhcpcEvents(out, "bound")
	if last := bs[len(bs)-1]; last["ip"] != "10.20.0.10" || last["hostname"] != "node10" {
		t.Fatalf("reserved client got %v", last)
	}

	// What happened went out as bounded events, valid against the schema.
	srv.stop()
	acked := map[string]string{}
	srv.pub.mu.Lock()
	for _, e := range srv.pub.evs {
		validate(t, e)
		var d events.DHCPLeasesChanged
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Changes {
			if c.Action == events.DHCPAcked {
				acked[c.MAC] = c.IP
			}
		}
	}
	srv.pub.mu.Unlock()
	if acked["02:00:00:00:aa:01"] != ip.String() || acked["52:54:00:12:34:56"] != "10.20.0.10" {
		t.Fatalf("acks in events of the restarted server: %v", acked)
	}
	if got := testutil.ToFloat64(srv.s.metrics.inUse.WithLabelValues("10.20.0.0/24")); got != 2 {
		t.Fatalf("leases in use = %v, want 2", got)
	}
}

// pxeClient is a PXE firmware's DHCP conversation, crafted with nclient4
// in namespace ns. It sends from a UDP socket bound to eth0 and asks for
// broadcast replies, as PXE ROMs do (nclient4's own raw socket sends
// packets dnsmasq never sees). Clients of one namespace share port 68:
// close one before starting the next.
type pxeClient struct {
	t *testing.T
	c *nclient4.Client
}

func newPXEClient(t *testing.T, ns string, mac net.HardwareAddr) *pxeClient {
	t.Helper()
	p := &pxeClient{t: t}
	err := netns.Do(ns, func() error {
		conn, err := server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcpv4.ClientPort})
		if err != nil {
			return err
		}
		p.c, err = nclient4.NewWithConn(conn, mac, nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
		if err != nil {
			conn.Close()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

func (p *pxeClient) close() { _ = p.c.Close() }

// pxe returns the options of a PXE ROM of arch (RFC 4578: 60, 93, 94, 97).
func pxe(arch iana.Arch, vendor string) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(vendor)),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 2, 1}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, bytes.Repeat([]byte{0xab}, 16)...)),
	}
}

// offers broadcasts a DISCOVER and returns every OFFER that arrives
// within wait, by server identifier.
func (p *pxeClient) offers(wait time.Duration, mods ...dhcpv4.Modifier) map[string]*dhcpv4.DHCPv4 {
	p.t.Helper()
	d, err := dhcpv4.NewDiscovery(p.c.InterfaceAddr(), mods...)
	if err != nil {
		p.t.Fatal(err)
	}
	got := map[string]*dhcpv4.DHCPv4{}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, _ = p.c.SendAndRead(ctx, p.c.RemoteAddr(), d, func(m *dhcpv4.DHCPv4) bool {
		if m.MessageType() == dhcpv4.MessageTypeOffer {
			got[m.ServerIdentifier().String()] = m
		}
		return false // keep listening until wait is over
	})
	return got
}

// TestNetnsProxyBesideDnsmasq: dnsmasq is the site's DHCP server (an
// address, no boot options); the rack in proxy mode gives a PXE client
// its boot file and next-server (port 67, then its unicast request on
// 4011) and gives a non-PXE client nothing.
func TestNetnsProxyBesideDnsmasq(t *testing.T) {
	dnsmasq := netnstest.Need(t, "dnsmasq", "dnsmasq-base")
	seg := netnstest.New(t)
	siteNS := seg.Host("site", "02:00:00:00:00:01", "10.20.0.1/24")
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	clientNS := seg.Host("pxe", "52:54:00:00:00:21", "")
	dir := t.TempDir()
	_, dlog := netnstest.Start(t, siteNS, dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root", "--no-ping",
		"--interface=eth0", "--bind-interfaces", "--dhcp-range=10.20.0.100,10.20.0.150,255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(dir, "leases"), "--pid-file="+filepath.Join(dir, "pid"), "--log-dhcp", "--log-facility=-")
	if !netnstest.WaitFor(10*time.Second, func() bool { return strings.Contains(dlog.String(), "DHCP, IP range") }) {
		t.Fatalf("dnsmasq did not start:\n%s", dlog)
	}
	srv := startServer(t, rackNS, Config{Mode: ModeProxy, Interface: "eth0"}, "rack-a", t.TempDir())

	// UEFI HTTP boot: a URL, and option 60 HTTPClient.
	hc := newPXEClient(t, clientNS, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x22})
	hoffers := hc.offers(2*time.Second, pxe(iana.EFI_X86_64_HTTP, "HTTPClient:Arch:00016:UNDI:003001")...)
	if h := hoffers["10.20.0.2"]; h == nil || h.BootFileName != "http://10.20.0.2:5248/snponly.efi" || h.ClassIdentifier() != ClientHTTP {
		t.Fatalf("HTTP boot client: %v", hoffers["10.20.0.2"])
	}
	hc.close()

	// A client that is not PXE gets dnsmasq's offer only.
	plain := newPXEClient(t, clientNS, net.HardwareAddr{0x02, 0, 0, 0, 0, 0x23})
	if po := plain.offers(2*time.Second, dhcpv4.WithBroadcast(true)); po["10.20.0.2"] != nil || po["10.20.0.1"] == nil {
		t.Fatalf("a non-PXE client got offers from %v; dnsmasq:\n%s", keys(po), dlog)
	}
	plain.close()

	c := newPXEClient(t, clientNS, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x21})
	mods := pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001")
	offers := c.offers(3*time.Second, mods...)
	site, rack := offers["10.20.0.1"], offers["10.20.0.2"]
	if site == nil || rack == nil {
		t.Fatalf("offers from %v; dnsmasq:\n%s", keys(offers), dlog)
	}
	if site.YourIPAddr.IsUnspecified() || site.BootFileName != "" {
		t.Fatalf("dnsmasq's offer: %s", site.Summary())
	}
	if !rack.YourIPAddr.IsUnspecified() || rack.BootFileName != FileUndionly || rack.ServerIPAddr.String() != "10.20.0.2" ||
		rack.ClassIdentifier() != ClientPXE {
		t.Fatalf("the rack's proxy offer: %s", rack.Summary())
	}
	// The client takes dnsmasq's address ...
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := c.c.RequestFromOffer(ctx, site, mods...)
	if err != nil {
		t.Fatalf("request to dnsmasq: %v\n%s", err, dlog)
	}
	addr := lease.ACK.YourIPAddr
	c.close() // port 68 is the 4011 request's
	seg.IP("-n", clientNS, "addr", "add", addr.String()+"/24", "dev", "eth0")
	// ... then asks the rack for its boot file on port 4011, from it.
	req, err := dhcpv4.NewRequestFromOffer(rack, append(mods, dhcpv4.WithClientIP(addr))...)
	if err != nil {
		t.Fatal(err)
	}
	var ack *dhcpv4.DHCPv4
	err = netns.Do(clientNS, func() error {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: addr, Port: dhcpv4.ClientPort})
		if err != nil {
			return err
		}
		defer conn.Close()
		for try := 0; try < 3 && ack == nil; try++ {
			if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.ParseIP("10.20.0.2"), Port: PXEPort}); err != nil {
				return err
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 1500)
			for {
				n, _, err := conn.ReadFrom(buf)
				if err != nil {
					break // timed out: send again
				}
				if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.TransactionID == req.TransactionID {
					ack = m
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != FileUndionly || ack.ServerIPAddr.String() != "10.20.0.2" {
		t.Fatalf("the rack's 4011 reply: %v", ack)
	}

	if n := testutil.ToFloat64(srv.s.metrics.packets.WithLabelValues("discover", outcomeIgnored)); n < 1 {
		t.Fatalf("ignored discovers = %v", n)
	}
}

func keys(m map[string]*dhcpv4.DHCPv4) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestNetnsTwoProxyRacks: two racks in proxy mode on one segment. Each
// PXE client is answered by its owner alone; a client that has been
// asking for the takeover time (secs field) is answered by both; when
// the owner is down, the other rack answers once the client has been
// asking for the takeover time.
func TestNetnsTwoProxyRacks(t *testing.T) {
	seg := netnstest.New(t)
	aNS := seg.Host("racka", "02:00:00:00:00:02", "10.20.0.2/24")
	bNS := seg.Host("rackb", "02:00:00:00:00:03", "10.20.0.3/24")
	clientNS := seg.Host("pxe", "52:54:00:00:00:31", "")
	cfg := Config{Mode: ModeProxy, Interface: "eth0", ProxyPeers: []string{"rack-a", "rack-b"}, ProxyTakeover: 2 * time.Second}
	startServer(t, aNS, cfg, "rack-a", t.TempDir())
	b := startServer(t, bNS, cfg, "rack-b", t.TempDir())
	ipOf := map[string]string{"rack-a": "10.20.0.2", "rack-b": "10.20.0.3"}

	// A client of each rack, and one more of rack-b nobody has heard of.
	macs := map[string]net.HardwareAddr{}
	var fresh net.HardwareAddr
	for i := 0; fresh == nil && i < 256; i++ {
		m := net.HardwareAddr{0x52, 0x54, 0, 0, 1, byte(i)}
		owner := ProxyOwner(cfg.ProxyPeers, m.String())
		if macs[owner] == nil {
			macs[owner] = m
		} else if owner == "rack-b" {
			fresh = m
		}
	}
	if len(macs) != 2 || fresh == nil {
		t.Fatalf("no MACs of both owners among 256: %v", macs)
	}
	mods := pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016")
	for _, owner := range cfg.ProxyPeers {
		c := newPXEClient(t, clientNS, macs[owner])
		got := c.offers(1500*time.Millisecond, mods...)
		if len(got) != 1 || got[ipOf[owner]] == nil {
			t.Fatalf("client %s (owner %s) got offers from %v", macs[owner], owner, keys(got))
		}
		// Trying for 2s by its own count: both racks answer.
		got = c.offers(1500*time.Millisecond, append(mods, func(d *dhcpv4.DHCPv4) { d.NumSeconds = 2 })...)
		if len(got) != 2 {
			t.Fatalf("client %s at secs=2 got offers from %v, want both racks", macs[owner], keys(got))
		}
		c.close()
	}

	// rack-b goes down. Its client, asking again every second with secs
	// left at 0, is answered by rack-a once it has asked for 2s.
	b.stop()
	c := newPXEClient(t, clientNS, fresh)
	d, err := dhcpv4.NewDiscovery(c.c.InterfaceAddr(), mods...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var offer *dhcpv4.DHCPv4
	for time.Since(start) < 10*time.Second && offer == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		offer, _ = c.c.SendAndRead(ctx, c.c.RemoteAddr(), d, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
		cancel()
	}
	if offer == nil || offer.ServerIdentifier().String() != "10.20.0.2" {
		t.Fatalf("no takeover by rack-a: %v", offer)
	}
	if waited := time.Since(start); waited < 1500*time.Millisecond {
		t.Fatalf("rack-a answered rack-b's client after %v, before the 2s takeover", waited)
	}
}

// TestNetnsNoSocketAfterRun: region subnets that arrive once Run has
// returned are refused and open no socket: port 67 is free again on the
// rack, on the new subnet's interface too.
func TestNetnsNoSocketAfterRun(t *testing.T) {
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	// A second interface, for a subnet of the region: one end of a veth
	// pair whose other end stays in the namespace too.
	seg.IP("-n", rackNS, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1peer")
	seg.IP("-n", rackNS, "addr", "add", "10.40.0.2/24", "dev", "eth1")
	seg.IP("-n", rackNS, "link", "set", "eth1", "up")
	seg.IP("-n", rackNS, "link", "set", "eth1peer", "up")
	cfg := Config{Mode: ModeManaged, Interface: "eth0", Subnets: []Subnet{testSubnet()}}
	srv := startServer(t, rackNS, cfg, "rack-a", t.TempDir())
	srv.stop()

	region := Subnet{CIDR: netip.MustParsePrefix("10.40.0.0/24"), Interface: "eth1",
		Ranges: []Range{{Start: netip.MustParseAddr("10.40.0.100"), End: netip.MustParseAddr("10.40.0.110")}}}
	var setErr error
	if err := netns.Do(rackNS, func() error {
		setErr = srv.s.SetRegionSubnets([]Subnet{region})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(setErr, ErrStopped) {
		t.Fatalf("SetRegionSubnets after Run returned: %v, want ErrStopped", setErr)
	}
	// A socket without SO_REUSEADDR on port 67 of every interface binds
	// only when no socket of the server is left open on it.
	if err := netns.Do(rackNS, func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: ServerPort})
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		t.Fatalf("port %d still taken after Run returned: %v", ServerPort, err)
	}
}
