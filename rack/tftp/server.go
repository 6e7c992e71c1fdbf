package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/tftp"
	"github.com/rackplane/rackplane/rack/handoff"
)

// Config configures a Server.
type Config struct {
	// Addresses to listen on (default ":69"; `rackplane dev` uses
	// "127.0.0.1:6969").
	Addresses []string
	// Timeout is how long one block waits for its acknowledgement
	// (default 2s; a client's timeout option wins); Retries how often it
	// is sent again (default 5). Timeouts in a row double the wait, up to
	// 8 times Timeout, until the final block is sent.
	Timeout time.Duration
	Retries int
	// MinTimeout lets a transfer send again sooner than Timeout once it
	// has measured the client's round trip (default 200ms, as TCP's
	// least retransmission timeout; Timeout or more turns it off): it
	// waits the smoothed round trip plus four times its variation, at
	// least MinTimeout, doubling on each timeout in a row. A client on a
	// rack's network answers within milliseconds, so a lost block or
	// acknowledgement then costs MinTimeout, not the Timeout a client
	// asks for (pxelinux, iPXE and curl ask for 1 to 3 seconds). Only
	// timeouts that waited Timeout count against Retries. A client not
	// yet heard from waits Timeout (see UnheardRetries).
	MinTimeout time.Duration
	// UnheardRetries is how often the first packet of a transfer (the
	// option acknowledgement, or the first block) is sent again while
	// the client has sent nothing back (default 3). Until it answers,
	// the request may have come with a forged source address: the
	// server sends such a client one packet at a time, never a window,
	// and no error when it gives up, so that a forged request draws no
	// more from the server than from tftpd-hpa
	// (TestAmplificationNoWorseThanTFTPDHPA).
	UnheardRetries int
	// MaxBlockSize caps the negotiated blksize (default 0: the interface
	// MTU less headers, as pin/tftp computes it).
	MaxBlockSize int
	// Window is the most blocks in flight ahead of the client's
	// acknowledgements (default 8; 1 is lock-step as in RFC 1350; at most
	// 64). A client that asks for a windowsize (RFC 7440) gets at most
	// Window. A client that does not still acknowledges every block, and
	// gets Window blocks ahead of its acknowledgements: the window hides
	// the round trip, which is what limits a lock-step transfer (see
	// BenchmarkTFTPPeers). A client that never asked for one may not keep
	// up with it: if a timeout comes before it has acknowledged its first
	// Window blocks, the rest of its transfer is lock-step. A lost block
	// or acknowledgement costs one timeout at the most.
	Window uint
	// HandoffTimeout bounds one hand-off decision (default 3s).
	HandoffTimeout time.Duration
}

func (c *Config) validate() error {
	if len(c.Addresses) == 0 {
		c.Addresses = []string{":69"}
	}
	for _, a := range c.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "tftp: address %q is not host:port (%v)", a, err)
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Retries <= 0 {
		c.Retries = 5
	}
	if c.MinTimeout <= 0 {
		c.MinTimeout = DefaultMinTimeout
	}
	if c.UnheardRetries <= 0 {
		c.UnheardRetries = 3
	}
	if c.MaxBlockSize != 0 && (c.MaxBlockSize < 512 || c.MaxBlockSize > 65464) {
		return rackplane.Errorf(rackplane.EINVALID, "tftp: MaxBlockSize %d must be between 512 and 65464", c.MaxBlockSize)
	}
	if c.HandoffTimeout <= 0 {
		c.HandoffTimeout = 3 * time.Second
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Window > tftp.MaxWindow {
		return rackplane.Errorf(rackplane.EINVALID, "tftp: Window %d must be at most %d", c.Window, tftp.MaxWindow)
	}
	return nil
}

// DefaultWindow is the default Config.Window.
const DefaultWindow = 8

// DefaultMinTimeout is the default Config.MinTimeout.
const DefaultMinTimeout = 200 * time.Millisecond

// Server serves boot files over TFTP on one or more addresses.
type Server struct {
	cfg      Config
	resolver *handoff.Resolver
	log      *slog.Logger

	mu    sync.Mutex
	conns []*net.UDPConn

	// pending carries the negotiated block size from pin/tftp's hook to
	// the read handler of the same transfer, keyed by the client address.
	pending sync.Map // string → *int

	inflight    prometheus.Gauge
	bytes       prometheus.Counter
	errs        *prometheus.CounterVec
	sizeQueries prometheus.Counter
}

// NewServer returns a server; Listen and Run start it.
func NewServer(cfg Config, resolver *handoff.Resolver, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if resolver == nil || log == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "tftp: resolver and logger are required")
	}
	m, err := handoff.NewFrontendMetrics(reg, "rackplane_tftp", "TFTP",
		"handoff (refused or not found), transfer (aborted or timed out), "+
			"last_unacknowledged (all sent, the last ACK never came), malformed, write_request")
	if err != nil {
		return nil, fmt.Errorf("tftp: %w", err)
	}
	s := &Server{cfg: cfg, resolver: resolver, log: log, inflight: m.InFlight, bytes: m.Bytes, errs: m.Errors,
		sizeQueries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_tftp_size_queries_total",
			Help: "Read requests the client ended at the option acknowledgement, having asked for the file's size (UEFI PXE does so before fetching it).",
		})}
	if reg != nil {
		if err := reg.Register(s.sizeQueries); err != nil {
			return nil, fmt.Errorf("tftp: register metrics: %w", err)
		}
	}
	return s, nil
}

// Listen binds every configured address. Run calls it when it was not.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns != nil {
		return nil
	}
	for _, a := range s.cfg.Addresses {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			s.closeLocked()
			return rackplane.WrapError(rackplane.EINVALID, err, "tftp: address %q", a)
		}
		c, err := net.ListenUDP("udp", ua)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("tftp: listen %s: %w", a, err)
		}
		askPacketInfo(c)
		s.conns = append(s.conns, c)
	}
	return nil
}

// Close releases the addresses Listen bound. Run does it on its way out;
// an owner that will not Run a listening server calls it.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

// askPacketInfo has the kernel tell, with each request, the address it
// came to and the interface, as the TFTP library asks when it starts
// serving: requests that come between Listen and Run carry them too (the
// library takes the block size limit from the interface's MTU).
func askPacketInfo(c *net.UDPConn) {
	if ip := c.LocalAddr().(*net.UDPAddr).IP; ip.To4() != nil {
		ipv4.NewPacketConn(c).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	} else {
		ipv6.NewPacketConn(c).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
}

func (s *Server) closeLocked() {
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// Addrs returns the bound addresses (after Listen).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.conns))
	for i, c := range s.conns {
		out[i] = c.LocalAddr()
	}
	return out
}

// Run serves until ctx ends, then waits for transfers in progress.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	conns := s.conns
	s.mu.Unlock()
	servers := make([]*tftp.Server, len(conns))
	errc := make(chan error, len(conns))
	for i, c := range conns {
		srv := tftp.NewServer(s.readHandler(ctx, c.LocalAddr().String()), s.writeHandler(c.LocalAddr().String()))
		srv.SetTimeout(s.cfg.Timeout)
		srv.SetRetries(s.cfg.Retries)
		srv.SetMinTimeout(s.cfg.MinTimeout)
		srv.SetUnheardRetries(s.cfg.UnheardRetries)
		if s.cfg.MaxBlockSize > 0 {
			srv.SetBlockSize(s.cfg.MaxBlockSize)
		}
		srv.SetAnticipate(s.cfg.Window)
		srv.SetWindowSize(s.cfg.Window)
		srv.SetHook(hook{s, c.LocalAddr().String()})
		servers[i] = srv
		go func() { errc <- srv.Serve(c) }()
	}
	// The bound addresses: a configured port 0 is the one the system chose.
	s.log.Info("tftp serving", "addresses", addrStrings(s.Addrs()))
	var err error
	pending := len(conns)
	select {
	case <-ctx.Done():
	case err = <-errc:
		pending--
	}
	for _, srv := range servers {
		srv.Shutdown()
	}
	// Shutdown closes a connection only once its Serve has taken it;
	// Close covers one that had not yet, and ends every Serve, which Run
	// waits for.
	s.Close()
	for ; pending > 0; pending-- {
		<-errc
	}
	if err != nil {
		return fmt.Errorf("tftp: serve: %w", err)
	}
	return nil
}

func (s *Server) readHandler(ctx context.Context, listen string) func(string, io.ReaderFrom) error {
	return func(name string, rf io.ReaderFrom) error {
		if mode := transferMode(rf); mode != "" && !strings.EqualFold(mode, "octet") && !strings.EqualFold(mode, "netascii") {
			// A NUL inside a requested name ends the name early and turns
			// the rest into the mode field; refuse rather than serve the
			// prefix.
			s.errs.WithLabelValues("malformed").Inc()
			s.resolver.Reject(events.BootRequestRejected{
				Protocol: events.BootProtocolTFTP, Local: listen, Remote: remoteOf(rf),
				Reason: "malformed", Detail: "transfer mode " + handoff.Printable(mode, 256) + " for " + handoff.Printable(name, 600),
			})
			return errors.New("unknown mode")
		}
		remote := remoteOf(rf)
		local := listen
		if pi, ok := rf.(tftp.RequestPacketInfo); ok && pi.LocalIP() != nil && !pi.LocalIP().IsUnspecified() {
			_, port, _ := net.SplitHostPort(listen)
			local = net.JoinHostPort(pi.LocalIP().String(), port)
		}
		hctx, cancel := context.WithTimeout(ctx, s.cfg.HandoffTimeout)
		res, err := s.resolver.Resolve(hctx, handoff.Request{Protocol: events.BootProtocolTFTP, Local: local, Remote: remote, Name: name})
		cancel()
		if err != nil {
			s.errs.WithLabelValues("handoff").Inc()
			// pin/tftp sends this message in the error packet.
			return errors.New(rackplane.ErrorMessage(err))
		}
		blksize := 512
		s.pending.Store(remote, &blksize)
		s.inflight.Inc()
		start := time.Now()
		n, err := rf.ReadFrom(res.Reader())
		elapsed := time.Since(start)
		s.inflight.Dec()
		s.pending.Delete(remote)
		s.bytes.Add(float64(n))
		if errors.Is(err, tftp.ErrOptionsDeclined) {
			// Not a transfer, failed or not: the client learnt the size
			// and will ask again for the file itself.
			s.sizeQueries.Inc()
			s.resolver.Release(res)
			s.log.Debug("tftp size query", "remote", remote, "file", name)
			return nil
		}
		switch {
		case errors.Is(err, tftp.ErrLastUnacknowledged):
			s.errs.WithLabelValues("last_unacknowledged").Inc()
		case err != nil:
			s.errs.WithLabelValues("transfer").Inc()
		}
		s.resolver.Finish(res, handoff.Outcome{Bytes: n, Duration: elapsed, BlockSize: blksize, Err: err})
		// ReadFrom already sent the error packet when it failed.
		return nil
	}
}

func (s *Server) writeHandler(listen string) func(string, io.WriterTo) error {
	return func(name string, wt io.WriterTo) error {
		remote := ""
		if it, ok := wt.(tftp.IncomingTransfer); ok {
			ra := it.RemoteAddr()
			remote = ra.String()
		}
		s.errs.WithLabelValues("write_request").Inc()
		s.resolver.Reject(events.BootRequestRejected{
			Protocol: events.BootProtocolTFTP, Local: listen, Remote: remote,
			Reason: "write_request", Detail: "write request for " + handoff.Printable(name, 900),
		})
		return errors.New("access denied")
	}
}

// transferMode reads the mode of a read request, which pin/tftp neither
// validates nor exposes; "" when it cannot be read.
func transferMode(rf io.ReaderFrom) string {
	v := reflect.ValueOf(rf)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return ""
	}
	f := v.Elem().FieldByName("mode")
	if !f.IsValid() || f.Kind() != reflect.String {
		return ""
	}
	return f.String()
}

func remoteOf(rf io.ReaderFrom) string {
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		ra := ot.RemoteAddr()
		return ra.String()
	}
	return ""
}

// hook learns the negotiated block size of each transfer, and hears of
// packets the server loop could not use (malformed or unexpected).
type hook struct {
	s      *Server
	listen string
}

func (h hook) OnSuccess(st tftp.TransferStats) { h.record(st) }

func (h hook) OnFailure(st tftp.TransferStats, err error) {
	if st.RemoteAddr == nil && st.Filename == "" {
		h.s.errs.WithLabelValues("malformed").Inc()
		h.s.resolver.Reject(events.BootRequestRejected{
			Protocol: events.BootProtocolTFTP, Local: h.listen, Reason: "malformed", Detail: err.Error(),
		})
		return
	}
	h.record(st)
}

func (h hook) record(st tftp.TransferStats) {
	if st.RemoteAddr == nil {
		return
	}
	key := net.JoinHostPort(st.RemoteAddr.String(), strconv.Itoa(st.Tid))
	v, ok := h.s.pending.Load(key)
	if !ok {
		return
	}
	if b, err := strconv.Atoi(st.Opts["blksize"]); err == nil {
		*v.(*int) = b
	}
}

func addrStrings(addrs []net.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}
