// Package tftptest puts a lossy network between TFTP clients and servers
// in tests: a UDP relay (on loopback, or on an address of the test's
// choosing) that drops packets by a seeded random draw or by count, in
// both directions.
package tftptest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Loss says which packets a relay drops. The relay counts and draws for
// all the transfers through it, in the order packets come: transfers one
// after the other see the same losses run after run.
type Loss struct {
	// Rate drops each packet with this probability (0 to 1), drawn from a
	// source seeded with Seed.
	Rate float64
	Seed int64
	// Every drops every Every-th packet of each direction (0: none).
	Every int
	// SpareOACKAck never drops a client's acknowledgement of an OACK
	// (ACK 0), nor counts it. atftp 0.8 aborts a transfer when the OACK
	// comes again, as it does from any server that lost that ACK.
	SpareOACKAck bool
	// Trace, when set, gets a line for every packet: for debugging.
	Trace func(format string, args ...any)
	// Delay holds each packet it passes on this long, each way, in the
	// order they came: the latency of a network between the two, which
	// loopback does not have (a few microseconds). A lock-step transfer
	// gets one block per round trip through it.
	Delay time.Duration
}

func (l Loss) String() string {
	if d := l.Delay; d > 0 {
		l.Delay = 0
		return l.String() + " lost, " + d.String() + " each way"
	}
	switch {
	case l.Every > 0 && l.Rate > 0:
		return fmt.Sprintf("every %dth and %.1f%% (seed %d)", l.Every, l.Rate*100, l.Seed)
	case l.Every > 0:
		return fmt.Sprintf("every %dth", l.Every)
	case l.Rate > 0:
		return fmt.Sprintf("%.1f%% (seed %d)", l.Rate*100, l.Seed)
	}
	return "none"
}

// Named is a Loss with a name, for the subtests of table tests.
type Named struct {
	Name string
	Loss Loss
}

// Standard returns the losses the loss tests put transfers through: 5%
// of the packets at random (seed 1350), and every 50th, each way.
func Standard() []Named {
	return []Named{
		{"random-5pct", Loss{Rate: 0.05, Seed: 1350}},
		{"every-50th", Loss{Every: 50}},
	}
}

// Direction of a packet through the relay.
type Direction int

const (
	ToServer Direction = iota
	ToClient
)

// Request is a read or write request the relay passed on.
type Request struct {
	Client  string
	Op      uint16 // 1 RRQ, 2 WRQ
	Name    string
	Mode    string
	Options map[string]string
}

// Relay forwards TFTP between clients and one server, dropping packets
// as its Loss says. Clients send their requests to Addr. A request is
// never dropped (its loss is the client's to recover, not the server's);
// every later packet of a transfer may be, in either direction. The
// server's replies reach the client from a relay port of their own per
// server port, so that transfer IDs work through the relay as without it.
type Relay struct {
	listen    *net.UDPConn
	server    *net.UDPAddr
	loss      Loss
	listenUDP ListenFunc
	clientIP  net.IP // of the sockets facing clients

	mu       sync.Mutex
	sessions map[string]*session
	requests []Request
	closed   bool
	wg       sync.WaitGroup
	done     chan struct{}

	lossMu sync.Mutex
	rng    *rand.Rand
	count  [2]int

	forwarded, dropped [2]atomic.Int64
}

// idle is how long a transfer's relay sockets stay without traffic.
const idle = 30 * time.Second

// ListenFunc opens one of a relay's UDP sockets on laddr.
type ListenFunc func(laddr *net.UDPAddr) (*net.UDPConn, error)

// NewRelay starts a relay on a free loopback port in front of server
// (host:port). Close stops it.
func NewRelay(server string, loss Loss) (*Relay, error) {
	return NewRelayOn("127.0.0.1:0", server, loss, nil)
}

// NewRelayOn starts a relay listening on listen (host:port) in front of
// server, for clients that are not on loopback: the sockets facing
// clients are bound to listen's address, those facing the server to
// none. Every socket is opened with listenUDP (nil: net.ListenUDP), which
// a test sets to open them in a network namespace, say.
func NewRelayOn(listen, server string, loss Loss, listenUDP ListenFunc) (*Relay, error) {
	sa, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		return nil, err
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, err
	}
	if listenUDP == nil {
		listenUDP = func(laddr *net.UDPAddr) (*net.UDPConn, error) { return net.ListenUDP("udp", laddr) }
	}
	l, err := listenUDP(la)
	if err != nil {
		return nil, err
	}
	r := &Relay{listen: l, server: sa, loss: loss, listenUDP: listenUDP, clientIP: la.IP,
		sessions: map[string]*session{}, done: make(chan struct{}), rng: rand.New(rand.NewSource(loss.Seed))}
	r.wg.Add(2)
	go r.serveRequests()
	go r.reap()
	return r, nil
}

// Addr is where clients send their requests.
func (r *Relay) Addr() *net.UDPAddr { return r.listen.LocalAddr().(*net.UDPAddr) }

// Requests returns the requests passed on so far.
func (r *Relay) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.requests...)
}

// Counts returns how many packets went each way and how many were dropped.
func (r *Relay) Counts(d Direction) (forwarded, dropped int64) {
	return r.forwarded[d].Load(), r.dropped[d].Load()
}

// Close stops the relay and closes every socket it opened.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	for _, s := range r.sessions {
		s.close()
	}
	r.mu.Unlock()
	err := r.listen.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) serveRequests() {
	defer r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := r.listen.ReadFromUDP(buf)
		if err != nil {
			return
		}
		pkt := append([]byte(nil), buf[:n]...)
		s, err := r.session(from, pkt)
		if err != nil {
			continue
		}
		s.touch()
		s.send(ToServer, s.up, pkt, r.server)
		r.forwarded[ToServer].Add(1)
	}
}

// session returns the transfer of client, starting it on its first packet.
func (r *Relay) session(client *net.UDPAddr, first []byte) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, net.ErrClosed
	}
	key := client.String()
	if s, ok := r.sessions[key]; ok {
		return s, nil
	}
	up, err := r.listenUDP(&net.UDPAddr{})
	if err != nil {
		return nil, err
	}
	if rq, err := ParseRequest(first); err == nil {
		rq.Client = key
		r.requests = append(r.requests, rq)
	}
	s := &session{r: r, key: key, client: client, up: up, downs: map[string]*net.UDPConn{}}
	s.touch()
	r.sessions[key] = s
	r.wg.Add(1)
	go s.fromServer()
	if r.loss.Delay > 0 {
		for d := range s.delayed {
			s.delayed[d] = make(chan delayed, maxDelayed)
			r.wg.Add(1)
			go s.deliver(Direction(d))
		}
	}
	return s, nil
}

// reap closes the sockets of transfers that have gone quiet.
func (r *Relay) reap() {
	defer r.wg.Done()
	t := time.NewTicker(idle / 3)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		r.mu.Lock()
		for k, s := range r.sessions {
			if time.Since(s.lastSeen()) > idle {
				s.close()
				delete(r.sessions, k)
			}
		}
		r.mu.Unlock()
	}
}

// session is one client's transfer through the relay.
type session struct {
	r      *Relay
	key    string
	client *net.UDPAddr
	up     *net.UDPConn // the relay's socket facing the server
	last   atomic.Int64

	mu    sync.Mutex
	downs map[string]*net.UDPConn // per server port: the socket facing the client
	shut  bool

	// delayed holds the packets going each way while Loss.Delay runs.
	delayed [2]chan delayed
}

// delayed is a packet held by a relay with a Delay until due.
type delayed struct {
	due  time.Time
	p    []byte
	conn *net.UDPConn
	to   *net.UDPAddr
}

// maxDelayed bounds the packets a session holds each way; more wait for room.
const maxDelayed = 4096

// send passes p on through conn to to, now or after Loss.Delay.
func (s *session) send(d Direction, conn *net.UDPConn, p []byte, to *net.UDPAddr) {
	if s.r.loss.Delay <= 0 {
		conn.WriteToUDP(p, to)
		return
	}
	select {
	case s.delayed[d] <- delayed{time.Now().Add(s.r.loss.Delay), append([]byte(nil), p...), conn, to}:
	case <-s.r.done:
	}
}

// deliver sends the packets held going d once each is due, until the relay closes.
func (s *session) deliver(d Direction) {
	defer s.r.wg.Done()
	for {
		select {
		case <-s.r.done:
			return
		case pk := <-s.delayed[d]:
			if wait := time.Until(pk.due); wait > 0 {
				time.Sleep(wait)
			}
			pk.conn.WriteToUDP(pk.p, pk.to)
		}
	}
}

func (s *session) touch()              { s.last.Store(time.Now().UnixNano()) }
func (s *session) lastSeen() time.Time { return time.Unix(0, s.last.Load()) }

func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shut = true
	s.up.Close()
	for _, d := range s.downs {
		d.Close()
	}
}

// drop decides the fate of the next packet going d.
func (r *Relay) drop(d Direction) bool {
	r.lossMu.Lock()
	defer r.lossMu.Unlock()
	r.count[d]++
	if r.loss.Every > 0 && r.count[d]%r.loss.Every == 0 {
		return true
	}
	return r.loss.Rate > 0 && r.rng.Float64() < r.loss.Rate
}

// pass counts packet p going d, and says whether to send it on.
func (r *Relay) pass(d Direction, p []byte) bool {
	drop := r.drop(d)
	if r.loss.Trace != nil {
		r.trace(d, p, drop)
	}
	if drop {
		r.dropped[d].Add(1)
		return false
	}
	r.forwarded[d].Add(1)
	return true
}

func (r *Relay) trace(d Direction, p []byte, dropped bool) {
	arrow := "client > server"
	if d == ToClient {
		arrow = "server > client"
	}
	what := fmt.Sprintf("%x", p[:min(len(p), 8)])
	if len(p) >= 4 {
		n := binary.BigEndian.Uint16(p[2:])
		switch binary.BigEndian.Uint16(p) {
		case 3:
			what = fmt.Sprintf("DATA %d (%d bytes)", n, len(p)-4)
		case 4:
			what = fmt.Sprintf("ACK %d", n)
		case 5:
			what = fmt.Sprintf("ERROR %d %q", n, p[4:])
		case 6:
			what = fmt.Sprintf("OACK %q", p[2:])
		}
	}
	if dropped {
		what += " DROPPED"
	}
	r.loss.Trace("%s %s %s", time.Now().Format("15:04:05.000"), arrow, what)
}

// fromServer passes the server's packets to the client, each server port
// through a relay port of its own.
func (s *session) fromServer() {
	defer s.r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := s.up.ReadFromUDP(buf)
		if err != nil {
			return
		}
		s.touch()
		down, err := s.down(from)
		if err != nil {
			return
		}
		if s.r.pass(ToClient, buf[:n]) {
			s.send(ToClient, down, buf[:n], s.client)
		}
	}
}

// down returns the socket that stands for server port from before the
// client, opening it on the port's first packet.
func (s *session) down(from *net.UDPAddr) (*net.UDPConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shut {
		return nil, net.ErrClosed
	}
	if d, ok := s.downs[from.String()]; ok {
		return d, nil
	}
	d, err := s.r.listenUDP(&net.UDPAddr{IP: s.r.clientIP})
	if err != nil {
		return nil, err
	}
	s.downs[from.String()] = d
	s.r.wg.Add(1)
	go s.fromClient(d, from)
	return d, nil
}

// fromClient passes what the client sends to the relay port standing for
// server on to server.
func (s *session) fromClient(d *net.UDPConn, server *net.UDPAddr) {
	defer s.r.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := d.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if !from.IP.Equal(s.client.IP) || from.Port != s.client.Port {
			continue
		}
		s.touch()
		if s.r.loss.SpareOACKAck && bytes.Equal(buf[:n], []byte{0, 4, 0, 0}) {
			s.r.forwarded[ToServer].Add(1)
			s.send(ToServer, s.up, buf[:n], server)
			continue
		}
		if s.r.pass(ToServer, buf[:n]) {
			s.send(ToServer, s.up, buf[:n], server)
		}
	}
}

// ParseRequest reads a TFTP read or write request: opcode, file name,
// mode and options (RFC 2347), names lowercased.
func ParseRequest(p []byte) (Request, error) {
	if len(p) < 2 {
		return Request{}, errors.New("short packet")
	}
	op := binary.BigEndian.Uint16(p)
	if op != 1 && op != 2 {
		return Request{}, fmt.Errorf("opcode %d is not a request", op)
	}
	fields, err := strings0(p[2:])
	if err != nil {
		return Request{}, err
	}
	if len(fields) < 2 {
		return Request{}, errors.New("no mode")
	}
	opts, err := options(fields[2:])
	if err != nil {
		return Request{}, err
	}
	return Request{Op: op, Name: fields[0], Mode: fields[1], Options: opts}, nil
}

// ParseOACK reads the options of an option acknowledgement (RFC 2347),
// names lowercased.
func ParseOACK(p []byte) (map[string]string, error) {
	if len(p) < 2 || binary.BigEndian.Uint16(p) != 6 {
		return nil, errors.New("not an OACK")
	}
	fields, err := strings0(p[2:])
	if err != nil {
		return nil, err
	}
	return options(fields)
}

func options(fields []string) (map[string]string, error) {
	if len(fields)%2 != 0 {
		return nil, errors.New("option without a value")
	}
	opts := map[string]string{}
	for i := 0; i+1 < len(fields); i += 2 {
		opts[strings.ToLower(fields[i])] = fields[i+1]
	}
	return opts, nil
}

// strings0 splits NUL-terminated strings; the last must be terminated.
func strings0(p []byte) ([]string, error) {
	var out []string
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return nil, errors.New("string not terminated")
		}
		out = append(out, string(p[:i]))
		p = p[i+1:]
	}
	return out, nil
}
