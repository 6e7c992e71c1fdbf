package routeradv_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/rackplane/rackplane/internal/netns"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/routeradv"
)

// client is a host on a segment where a responder runs, with a socket
// that sends and hears NDP messages.
type client struct {
	ns   string
	conn *ndp.Conn
}

// segment starts a responder on one host of a new segment and returns a
// second host. Both have a link-local address usable at once.
func segment(t *testing.T) *client {
	t.Helper()
	seg := netnstest.New(t)
	rns := seg.Host("router", "02:00:00:00:00:01", "")
	cns := seg.Host("client", "02:00:00:00:00:02", "")
	// The kernels of the hosts and of the bridge's namespace solicit
	// too, when their interfaces come up: they are told not to, so that
	// every solicitation is the test's.
	for _, ns := range []string{rns, cns, seg.NS("br")} {
		if out, err := netnstest.Run(ns, "sh", "-c", "for f in /proc/sys/net/ipv6/conf/*/router_solicitations; do echo 0 > $f; done"); err != nil {
			t.Fatalf("no router solicitations in %s: %v %s", ns, err, out)
		}
	}
	seg.IP("-n", rns, "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
	seg.IP("-n", cns, "addr", "add", "fe80::2/64", "dev", "eth0", "nodad")

	ctx, cancel := context.WithCancel(context.Background())
	done, err := routeradv.Start(ctx, rns, "eth0", netip.MustParseAddr("fe80::1"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	c := &client{ns: cns}
	if err := netns.Do(cns, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c.conn, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

// send sends each message to all routers, from the client's namespace
// (a send names the interface, which is looked up there).
func (c *client) send(t *testing.T, n int, m ndp.Message) {
	t.Helper()
	if err := netns.Do(c.ns, func() error {
		for range n {
			if err := c.conn.WriteTo(m, nil, netip.IPv6LinkLocalAllRouters()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// advertisements counts the router advertisements the client hears
// within d, and returns the last.
func (c *client) advertisements(t *testing.T, d time.Duration) (int, *ndp.RouterAdvertisement) {
	t.Helper()
	var n int
	var last *ndp.RouterAdvertisement
	if err := c.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	for {
		m, _, _, err := c.conn.ReadFrom()
		if err != nil {
			return n, last
		}
		if ra, ok := m.(*ndp.RouterAdvertisement); ok {
			n++
			last = ra
		}
	}
}

// TestSolicitationIsAnswered: what iPXE waits for arrives, and configures
// nothing: not a default router, no DHCPv6, no prefix.
func TestSolicitationIsAnswered(t *testing.T) {
	c := segment(t)
	c.send(t, 1, &ndp.RouterSolicitation{})
	n, ra := c.advertisements(t, 2*time.Second)
	if n != 1 {
		t.Fatalf("one solicitation drew %d advertisements, want 1", n)
	}
	if ra.RouterLifetime != 0 || ra.ManagedConfiguration || ra.OtherConfiguration || len(ra.Options) != 0 {
		t.Errorf("the advertisement configures something: %+v", ra)
	}
}

// TestListenNeedsALinkLocalAddress: an address that is not link-local,
// or not the interface's, is refused, naming it; so is a namespace Start
// cannot enter.
func TestListenNeedsALinkLocalAddress(t *testing.T) {
	seg := netnstest.New(t)
	ns := seg.Host("router", "02:00:00:00:00:01", "")
	seg.IP("-n", ns, "addr", "add", "fe80::1/64", "dev", "eth0", "nodad")
	for _, addr := range []string{"10.0.0.1", "2001:db8::1", "fe80::9"} {
		err := netns.Do(ns, func() error {
			r, err := routeradv.Listen("eth0", netip.MustParseAddr(addr))
			if err == nil {
				r.Run(canceled())
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen with %s: %v, want an error naming it", addr, err)
		}
		if _, err := routeradv.Start(canceled(), ns, "eth0", netip.MustParseAddr(addr)); err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Start with %s: %v, want an error naming it", addr, err)
		}
	}
	if _, err := routeradv.Start(canceled(), "rp-absent", "eth0", netip.MustParseAddr("fe80::1")); err == nil || !strings.Contains(err.Error(), "rp-absent") {
		t.Errorf("Start in a namespace that does not exist: %v, want an error naming it", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestBurstAndJunk: a burst of solicitations draws few answers (one
// multicast answers them all), other NDP messages draw none, and the
// responder answers the next solicitation after them.
func TestBurstAndJunk(t *testing.T) {
	c := segment(t)
	c.send(t, 200, &ndp.RouterSolicitation{})
	if n, _ := c.advertisements(t, time.Second); n < 1 || n > 5 {
		t.Errorf("200 solicitations at once drew %d advertisements, want 1 to 5", n)
	}
	c.send(t, 50, &ndp.NeighborSolicitation{TargetAddress: netip.MustParseAddr("fe80::1")})
	c.send(t, 50, &ndp.NeighborAdvertisement{TargetAddress: netip.MustParseAddr("fe80::2")})
	if n, _ := c.advertisements(t, 500*time.Millisecond); n != 0 {
		t.Errorf("neighbour solicitations and advertisements drew %d router advertisements, want none", n)
	}
	c.send(t, 1, &ndp.RouterSolicitation{})
	if n, _ := c.advertisements(t, 2*time.Second); n != 1 {
		t.Fatalf("a solicitation after the junk drew %d advertisements, want 1", n)
	}
}
