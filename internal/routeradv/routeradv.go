package routeradv

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/rackplane/rackplane/internal/netns"
)

// minInterval is the least time between two advertisements. One
// advertisement goes to all nodes, so it answers every solicitation sent
// before it: a burst of them (a rack of machines powered on at once)
// draws one answer, not one each.
const minInterval = 100 * time.Millisecond

// Responder answers the router solicitations of one interface.
type Responder struct {
	conn *ndp.Conn
	ifi  *net.Interface
	once sync.Once
}

// Listen opens the responder's socket on the interface named name, in
// the network namespace of the calling thread, with addr, a link-local
// address of the interface, as the source of its advertisements. addr
// must be usable: added without duplicate address detection ("nodad"),
// or past it. (The interface's own link-local address is tentative for
// a second or more after it comes up, and cannot be bound meanwhile.)
func Listen(name string, addr netip.Addr) (*Responder, error) {
	if !addr.Is6() || !addr.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("router advertisements on %s: %s is not an IPv6 link-local address", name, addr)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	conn, _, err := ndp.Listen(ifi, ndp.Addr(addr.WithZone("").String()))
	if err != nil {
		return nil, fmt.Errorf("router advertisements on %s: %w", name, err)
	}
	// Solicitations go to all routers, a group the socket must join.
	if err := conn.JoinGroup(netip.IPv6LinkLocalAllRouters()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("router advertisements on %s: join all-routers: %w", name, err)
	}
	return &Responder{conn: conn, ifi: ifi}, nil
}

// advertisement is what every solicitation draws: a router that is not a
// default router (lifetime 0) and offers no configuration.
var advertisement = &ndp.RouterAdvertisement{CurrentHopLimit: 64}

// Run answers solicitations until ctx ends or the socket fails, and
// closes the socket. Anything else the socket reads is ignored. Like
// Listen, it must run in the interface's namespace.
func (r *Responder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, r.close)
	defer stop()
	defer r.close()
	var last time.Time
	for {
		m, _, _, err := r.conn.ReadFrom()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("router advertisements on %s: %w", r.ifi.Name, err)
		}
		if _, ok := m.(*ndp.RouterSolicitation); !ok {
			continue
		}
		if now := time.Now(); now.Sub(last) >= minInterval {
			last = now
			// A send can fail while the segment has no carrier yet: the
			// next solicitation is answered again, and a closed socket
			// ends the next read.
			_ = r.conn.WriteTo(advertisement, nil, netip.IPv6LinkLocalAllNodes())
		}
	}
}

func (r *Responder) close() { r.once.Do(func() { r.conn.Close() }) }

// Start answers solicitations on the interface named name in the network
// namespace ns (package netns) until ctx ends: Listen and Run on a thread
// in ns. It returns once the socket is open, or with why it could not be
// opened. The channel then receives what Run returned (nil once ctx
// ended) and is closed.
func Start(ctx context.Context, ns, name string, addr netip.Addr) (<-chan error, error) {
	listening := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		defer close(done)
		var runErr error
		err := netns.Do(ns, func() error {
			r, err := Listen(name, addr)
			listening <- err
			if err == nil {
				runErr = r.Run(ctx)
			}
			return nil
		})
		if err != nil { // Listen never ran: the namespace cannot be entered
			listening <- err
			return
		}
		done <- runErr
	}()
	if err := <-listening; err != nil {
		<-done
		return nil, err
	}
	return done, nil
}
