package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
)

// Publisher takes the events the server emits; *events.Publisher is one.
type Publisher interface{ Publish(events.Event) }

// Env is what the rack gives its DHCP server besides the configuration.
type Env struct {
	// RackID is the events' source and subject; required with Publisher.
	RackID string
	// RackName is this rack's name among Config.ProxyPeers.
	RackName string
	// DataDir holds the lease log (managed mode).
	DataDir string
	// HTTPPort is the rack's HTTP port, for the default Config.HTTPURL.
	HTTPPort  int
	Publisher Publisher
	Logger    *slog.Logger
	// Registerer takes the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
	// BootOverride returns a machine's own boot file by canonical MAC, ""
	// for none (the boot decision's, once it carries one). Nil: none.
	BootOverride func(mac string) string
}

// Ports of the DHCP server and of the PXE boot server (proxyDHCP's
// DHCPREQUEST, PXE 2.1).
const (
	ServerPort = dhcpv4.ServerPort
	PXEPort    = 4011
)

// Server is the rack's DHCP server, in proxy or managed mode.
type Server struct {
	cfg     Config
	env     Env
	log     *slog.Logger
	now     func() time.Time
	loaders Loaders
	table   *table // managed mode
	seen    *seenTable
	report  *reporter
	metrics *metrics

	// mu guards the listeners, which change with the subnets in managed
	// mode. Once Listen was called, the interfaces of the subnets have
	// listeners; while Run serves, each listener's sockets are served.
	mu        sync.Mutex
	listening bool
	listeners []*listener
	serving   bool
	served    sync.WaitGroup
	// stopped is set once Run stops serving or Close is called: from
	// then on nothing opens a socket or changes the table (whose lease
	// log is closed), as nobody would serve or close it.
	stopped bool
}

// ErrStopped is returned by the methods that would open sockets or
// change the leases once the server has stopped (Run returned, or Close
// was called).
var ErrStopped = errors.New("dhcp: the server has stopped")

// listener is the server on one interface.
type listener struct {
	iface   string
	ip      netip.Addr // the rack's address there: next-server, server id
	httpURL string
	conns   map[int]net.PacketConn
}

// New checks cfg and builds a server (in managed mode, reading and
// compacting the lease log). It opens no socket: Listen does.
func New(cfg Config, env Env) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == ModeOff {
		return nil, errors.New("dhcp: mode is off")
	}
	if env.Logger == nil {
		env.Logger = slog.Default()
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Publisher != nil && env.RackID == "" {
		return nil, errors.New("dhcp: RackID is required with a Publisher (it is the events' source)")
	}
	if len(cfg.ProxyPeers) > 0 && !slices.Contains(cfg.ProxyPeers, env.RackName) {
		return nil, fmt.Errorf("dhcp: -dhcp-proxy-peers %v does not name this rack (%q)", cfg.ProxyPeers, env.RackName)
	}
	m, err := newMetrics(env.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, env: env, log: env.Logger, now: env.Now, metrics: m,
		loaders: Loaders{BIOS: cfg.BIOSLoader, UEFI: cfg.UEFILoader, ARM64: cfg.ARM64Loader},
		seen:    &seenTable{}, report: newReporter(cfg.Mode, cfg.MaxEventChanges, env.Now())}
	if cfg.Mode == ModeManaged {
		if env.DataDir == "" {
			return nil, errors.New("dhcp: managed mode needs the rack's data directory for its leases")
		}
		var bad int
		s.table, bad, err = newTable(cfg, filepath.Join(env.DataDir, LeaseFile))
		if err != nil {
			return nil, fmt.Errorf("dhcp: lease log: %w", err)
		}
		if bad > 0 {
			s.log.Warn("lease log lines skipped (torn by a crash, or damaged)", "path", filepath.Join(env.DataDir, LeaseFile), "lines", bad)
		}
		s.log.Info("leases loaded", "leases", len(s.table.records))
	}
	return s, nil
}

// Listen opens the sockets: port 67 on every interface of the server,
// and 4011 too in proxy mode. Run calls it when it was not called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrStopped
	}
	if s.listening {
		return nil
	}
	if err := s.relistenLocked(true); err != nil {
		return err
	}
	s.listening = true
	return nil
}

// interfaces are the interfaces the server listens on now.
func (s *Server) interfaces() []string {
	if s.cfg.Mode == ModeProxy {
		return []string{s.cfg.Interface}
	}
	var ifaces []string
	for _, p := range s.table.poolList() {
		name := p.subnet.Interface
		if name == "" {
			name = s.cfg.Interface
		}
		if !slices.Contains(ifaces, name) {
			ifaces = append(ifaces, name)
		}
	}
	return ifaces
}

// relistenLocked makes the listeners match the interfaces of the
// subnets: it opens the new ones, closes those no subnet is on any more,
// and points each at its subnet. With strict, the first failure undoes
// everything opened and is returned (at start: a port taken or an
// interface missing stops the rack); otherwise an interface that cannot
// be opened is reported and the others are served.
func (s *Server) relistenLocked(strict bool) error {
	want := s.interfaces()
	var keep, opened []*listener
	for _, l := range s.listeners {
		if slices.Contains(want, l.iface) {
			keep = append(keep, l)
		} else {
			s.log.Info("dhcp stops listening: no subnet on the interface any more", "interface", l.iface)
			l.close()
		}
	}
	var errs []error
	for _, name := range want {
		if slices.ContainsFunc(keep, func(l *listener) bool { return l.iface == name }) {
			continue
		}
		l, err := s.open(name)
		if err != nil {
			if strict {
				for _, l := range opened {
					l.close()
				}
				return err
			}
			errs = append(errs, err)
			continue
		}
		opened = append(opened, l)
	}
	s.listeners = append(keep, opened...)
	for _, l := range keep {
		if s.table != nil {
			if err := s.locate(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.serving {
		for _, l := range opened {
			s.serveListener(l)
		}
	}
	return errors.Join(errs...)
}

// open makes the listener of interface name and opens its sockets.
func (s *Server) open(name string) (*listener, error) {
	ip, err := s.interfaceAddr(name)
	if err != nil {
		return nil, err
	}
	l, err := s.attach(name, ip)
	if err != nil {
		return nil, err
	}
	ports := []int{ServerPort}
	if s.cfg.Mode == ModeProxy {
		ports = append(ports, PXEPort)
	}
	for _, port := range ports {
		// Bound to the interface (SO_BINDTODEVICE), with broadcast on.
		c, err := server4.NewIPv4UDPConn(name, &net.UDPAddr{Port: port})
		if err != nil {
			l.close()
			return nil, fmt.Errorf("dhcp: listen on %s port %d: %w", name, port, err)
		}
		l.conns[port] = c
	}
	s.log.Info("dhcp listening", "mode", s.cfg.Mode, "interface", name, "server_ip", ip, "http_url", l.httpURL)
	return l, nil
}

// serveListener serves l's sockets until they are closed.
func (s *Server) serveListener(l *listener) {
	for port, c := range l.conns {
		s.served.Add(1)
		go func() { defer s.served.Done(); s.serve(l, port, c) }()
	}
}

// interfaceAddr is the rack's address on interface name: ServerIP if
// set, else in managed mode its address inside one of its subnets, else
// its first IPv4 address.
func (s *Server) interfaceAddr(name string) (netip.Addr, error) {
	if s.cfg.ServerIP.IsValid() {
		return s.cfg.ServerIP, nil
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("dhcp: addresses of %s: %w", name, err)
	}
	var first netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP.To4())
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		if s.table == nil {
			return ip, nil
		}
		if !first.IsValid() {
			first = ip
		}
		if s.table.poolOf(ip) != nil {
			return ip, nil
		}
	}
	if s.table != nil && first.IsValid() {
		return netip.Addr{}, fmt.Errorf("dhcp: interface %s has no address in any of its subnets (it has %s)", name, first)
	}
	return netip.Addr{}, fmt.Errorf("dhcp: interface %s has no IPv4 address", name)
}

// attach makes the listener of interface name, where the rack's address
// is ip; it opens no socket.
func (s *Server) attach(name string, ip netip.Addr) (*listener, error) {
	l := &listener{iface: name, ip: ip, conns: map[int]net.PacketConn{}, httpURL: s.cfg.HTTPURL}
	if l.httpURL == "" {
		port := s.env.HTTPPort
		if port == 0 {
			port = 5248
		}
		l.httpURL = "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	if s.table != nil {
		if err := s.locate(l); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// locate checks that l's address is in one of the subnets (the one its
// packets are served from, looked up per packet) and keeps the address
// out of every pool.
func (s *Server) locate(l *listener) error {
	s.table.addServerIP(l.ip)
	if s.table.poolOf(l.ip) == nil {
		return fmt.Errorf("dhcp: the rack's address %s on %s is in none of the subnets", l.ip, l.iface)
	}
	return nil
}

// Close releases what New and Listen took (sockets, the lease log) for a
// server that will not Run; Run releases them itself.
func (s *Server) Close() error {
	s.mu.Lock()
	s.stopped = true
	for _, l := range s.listeners {
		l.close()
	}
	s.mu.Unlock()
	if s.table != nil {
		return s.table.close()
	}
	return nil
}

func (l *listener) close() {
	for _, c := range l.conns {
		c.Close()
	}
}

// Run serves until ctx ends, then closes the sockets and the lease log,
// sends what is left to report, and returns once every goroutine it
// started has returned.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	s.serving = true
	for _, l := range s.listeners {
		s.serveListener(l)
	}
	s.mu.Unlock()
	t := time.NewTicker(s.cfg.EventInterval)
	defer t.Stop()
	s.tick()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			s.tick()
		}
	}
	s.mu.Lock()
	s.serving, s.stopped = false, true
	for _, l := range s.listeners {
		l.close()
	}
	s.mu.Unlock()
	s.served.Wait()
	s.tick()
	if s.table != nil {
		if err := s.table.close(); err != nil {
			s.log.Error("close lease log", "err", err)
		}
	}
	return nil
}

// tick publishes the interval's report and refreshes the lease gauges.
func (s *Server) tick() {
	now := s.now()
	if s.table != nil {
		for p, n := range s.table.inUse(now) {
			s.metrics.inUse.WithLabelValues(p.prefix.String()).Set(float64(n))
		}
	}
	data := s.report.flush(now)
	if data != nil && data.Ignored[ReasonNoAddress]+data.Ignored[ReasonOfferLimit] > 0 {
		s.log.Warn("dhcp clients got no address", "no_address", data.Ignored[ReasonNoAddress],
			"offer_limit", data.Ignored[ReasonOfferLimit], "since", data.Since)
	}
	if data == nil || s.env.Publisher == nil {
		return
	}
	ev, err := events.New(events.RackSource(s.env.RackID), events.TypeDHCPLeasesChanged, events.RackStreamName(s.env.RackID), now, data)
	if err != nil {
		s.log.Error("build dhcp event", "err", err)
		return
	}
	s.env.Publisher.Publish(ev)
}

// serve answers the packets of one socket until it is closed. Packets
// are handled one at a time, so a flood costs CPU, never memory.
func (s *Server) serve(l *listener, port int, c net.PacketConn) {
	buf := make([]byte, 4096)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("dhcp read", "interface", l.iface, "port", port, "err", err)
			time.Sleep(10 * time.Millisecond) // a transient error must not spin
			continue
		}
		peer, _ := from.(*net.UDPAddr)
		reply, dst := s.safeHandle(l, port, buf[:n], peer)
		if reply == nil {
			continue
		}
		if _, err := c.WriteTo(reply.ToBytes(), dst); err != nil {
			s.log.Warn("dhcp reply not sent", "interface", l.iface, "dst", dst, "err", err)
			s.report.ignore(ReasonError)
		}
	}
}

// safeHandle is handle, with a panic on a hostile packet counted and
// logged rather than taking the rack down. (The fuzz target calls handle
// itself, so such a panic is still found.)
func (s *Server) safeHandle(l *listener, port int, raw []byte, peer *net.UDPAddr) (reply *dhcpv4.DHCPv4, dst *net.UDPAddr) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("dhcp packet handling panicked", "interface", l.iface, "panic", p)
			s.metrics.malformed.Inc()
			s.report.malformedPacket()
			reply, dst = nil, nil
		}
	}()
	return s.handle(l, port, raw, peer)
}
