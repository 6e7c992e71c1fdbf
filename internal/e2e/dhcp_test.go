package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/rack/dhcp"
)

// TestRackdProxyDHCPThenTFTP runs rackd with -dhcp-mode proxy in a network
// namespace of its own, on a segment with a PXE client. The BIOS client is
// offered undionly.kpxe with rackd as next-server, no address; once it has
// an address (from the site, here set by hand) it fetches that file from
// rackd over TFTP and gets the ipxe package's bytes. The offer reaches
// NATS as a dhcp_leases_changed event.
func TestRackdProxyDHCPThenTFTP(t *testing.T) {
	endToEnd(t)
	curl := netnstest.Need(t, "curl", "curl")
	want, err := os.ReadFile("/usr/lib/ipxe/undionly.kpxe")
	if err != nil {
		t.Fatal("undionly.kpxe missing: install the Debian package ipxe")
	}
	seg := netnstest.New(t)
	rackNS := seg.Host("rack", "02:00:00:00:00:02", "10.20.0.2/24")
	clientNS := seg.Host("pxe", "52:54:00:00:00:41", "")

	sub := natsForRack(t, rackNS)
	bin := filepath.Join(binDir, "rackd")
	rackd := startCmd(t, "rackd", exec.Command("ip", "netns", "exec", rackNS, bin,
		"-name", "dhcp-rack", "-data-dir", t.TempDir(), "-insecure-nats", "-nats-url", "nats://127.0.0.1:4222",
		"-http-addr", ":5248", "-tftp-addr", ":69",
		"-dhcp-mode", "proxy", "-dhcp-interface", "eth0", "-dhcp-event-interval", "200ms", "-log-level", "debug"))

	var c *nclient4.Client
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x41}
	if err := netns.Do(clientNS, func() error {
		conn, err := server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcpv4.ClientPort})
		if err != nil {
			return err
		}
		c, err = nclient4.NewWithConn(conn, mac, nclient4.WithTimeout(time.Second), nclient4.WithRetry(1))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var offer *dhcpv4.DHCPv4
	eventually(t, 20*time.Second, "a proxy offer from rackd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		offer, err = c.DiscoverOffer(ctx, dhcpv4.WithBroadcast(true),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
		return err
	})
	if offer.BootFileName != dhcp.FileUndionly || offer.ServerIPAddr.String() != "10.20.0.2" || !offer.YourIPAddr.IsUnspecified() {
		t.Fatalf("proxy offer: %s", offer.Summary())
	}

	// rackd imports the system bootloaders in the background: wait.
	seg.IP("-n", clientNS, "addr", "add", "10.20.0.50/24", "dev", "eth0")
	out := filepath.Join(t.TempDir(), "bootfile")
	var got []byte
	netnstest.WaitFor(30*time.Second, func() bool {
		_, _ = netnstest.Run(clientNS, curl, "-sS", "--max-time", "5", "-o", out,
			"tftp://"+offer.ServerIPAddr.String()+"/"+offer.BootFileName)
		got, _ = os.ReadFile(out)
		return bytes.Equal(got, want)
	})
	if !bytes.Equal(got, want) {
		t.Fatalf("%s over TFTP: %d bytes, want the %d of the ipxe package\n%s", offer.BootFileName, len(got), len(want), tail(rackd.Output(), 30))
	}

	waitDHCPChange(t, sub, "a boot offer of "+dhcp.FileUndionly+" to "+mac.String(), func(c events.DHCPLeaseChange) bool {
		return c.Action == events.DHCPBootOffered && c.MAC == mac.String() && c.BootFile == dhcp.FileUndionly
	})
	if err := rackd.Stop(); err != nil {
		t.Fatalf("rackd did not stop cleanly: %v", err)
	}
}

// natsForRack makes the streams on a NATS server of the test, which rackd
// in namespace rackNS reaches at nats://127.0.0.1:4222 (a forwarded
// port), and subscribes to every rack event.
func natsForRack(t *testing.T, rackNS string) *nats.Subscription {
	t.Helper()
	_, sub := natsConnForRack(t, rackNS)
	return sub
}

// natsConnForRack is natsForRack that also returns the test's
// connection, to answer requests the rack makes of the region.
func natsConnForRack(t *testing.T, rackNS string) (*nats.Conn, *nats.Subscription) {
	t.Helper()
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	netnstest.Forward(t, rackNS, "127.0.0.1:4222", ns.Server.Addr().String())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(context.Background(), js, time.Hour); err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync(events.RackEventsWildcard)
	if err != nil {
		t.Fatal(err)
	}
	return nc, sub
}

// waitDHCPChange waits up to 15s for a valid dhcp_leases_changed event
// on sub with a change that match accepts.
func waitDHCPChange(t *testing.T, sub *nats.Subscription, what string, match func(events.DHCPLeaseChange) bool) {
	t.Helper()
	err := waitEvent(t, sub, events.TypeDHCPLeasesChanged, func(e events.Event) bool {
		var d events.DHCPLeasesChanged
		if err := e.DecodeData(&d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Changes {
			if match(c) {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no dhcp_leases_changed event with %s: %v", what, err)
	}
}

// waitEvent reads sub for up to 15s until match accepts a valid event of
// type typ; the error says why none did.
func waitEvent(t *testing.T, sub *nats.Subscription, typ string, match func(events.Event) bool) error {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(15 * time.Second); ; {
		m, err := sub.NextMsg(time.Until(end))
		if err != nil {
			return err
		}
		if e, err := v.Decode(m.Data); err == nil && e.Type == typ && match(e) {
			return nil
		}
	}
}
