package httpserver

import (
	"bufio"
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// conns tracks a server's open connections, shared by its listeners, and
// keeps those not inside a handler in the order they last did anything,
// so that the one idle longest is the first to go.
type conns struct {
	max int
	m   *metrics
	log *slog.Logger

	mu   sync.Mutex
	open map[net.Conn]*list.Element // nil element: inside a handler
	idle list.List                  // of net.Conn, idle longest first
	// warned is when running out of descriptors was last logged.
	warned time.Time
	// closers bounds the refused connections being closed gracefully.
	closers chan struct{}
}

const maxClosers = 64

func newConns(max int, m *metrics, log *slog.Logger) *conns {
	return &conns{max: max, m: m, log: log, open: make(map[net.Conn]*list.Element), closers: make(chan struct{}, maxClosers)}
}

func (cs *conns) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.open)
}

// admit takes c, shedding the connection idle longest when full. It
// reports false when every open connection is inside a handler: c is then
// not taken.
func (cs *conns) admit(c net.Conn) bool {
	cs.mu.Lock()
	var shed net.Conn
	if len(cs.open) >= cs.max {
		if shed = cs.oldestIdleLocked(); shed == nil {
			cs.mu.Unlock()
			return false
		}
	}
	cs.open[c] = cs.idle.PushBack(c)
	cs.mu.Unlock()
	if shed != nil {
		cs.m.shed.WithLabelValues("limit").Inc()
		_ = shed.Close()
	}
	return true
}

// shedOldest closes the connection idle longest, if there is one, to give
// its descriptor to a new connection.
func (cs *conns) shedOldest(reason string) bool {
	cs.mu.Lock()
	c := cs.oldestIdleLocked()
	cs.mu.Unlock()
	if c == nil {
		return false
	}
	cs.m.shed.WithLabelValues(reason).Inc()
	_ = c.Close()
	return true
}

// oldestIdleLocked forgets and returns the connection idle longest, or
// nil when none is idle.
func (cs *conns) oldestIdleLocked() net.Conn {
	e := cs.idle.Front()
	if e == nil {
		return nil
	}
	c := cs.idle.Remove(e).(net.Conn)
	delete(cs.open, c)
	return c
}

// state follows net/http's view of each connection (http.Server.ConnState).
// A connection is idle from its accept, and after each response, until
// its next request's headers are all in: slow headers are as sheddable
// as none.
func (cs *conns) state(c net.Conn, s http.ConnState) { cs.setState(c, s, true) }

// setState is state; clearWrite says whether a connection going idle has
// its write deadline cleared (the fast path's writes each move it first,
// and leave it).
func (cs *conns) setState(c net.Conn, s http.ConnState, clearWrite bool) {
	// A connection the fast path read from first is known by the one
	// accepted.
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = u.NetConn()
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	e, ok := cs.open[c]
	if !ok {
		return // shed already, or never admitted
	}
	switch s {
	case http.StateActive:
		if e != nil {
			cs.idle.Remove(e)
			cs.open[c] = nil
		}
	case http.StateIdle:
		if e != nil {
			cs.idle.MoveToBack(e)
		} else {
			cs.open[c] = cs.idle.PushBack(c)
		}
		// The write deadline of the last response must not outlive it: the
		// next request may come long after.
		if clearWrite {
			_ = c.SetWriteDeadline(time.Time{})
		}
	case http.StateClosed, http.StateHijacked:
		if e != nil {
			cs.idle.Remove(e)
		}
		delete(cs.open, c)
	}
}

// listener admits connections into conns.
type listener struct {
	net.Listener
	conns *conns
}

// busy is the answer to a connection refused because every connection is
// inside a handler. It fits any socket's send buffer, so writing it never
// blocks the accept loop.
var busy = func() []byte {
	const body = `{"error":{"code":"unavailable","message":"too many requests in progress; try again"}}` + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"+
		"Connection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
				return nil, err
			}
			l.conns.m.acceptErrors.Inc()
			if l.conns.shedOldest("fd_limit") {
				continue
			}
			l.conns.warnFDs(err)
			// net/http's Serve retries after a growing pause (5 ms up to
			// 1 s): the error is a temporary net.Error.
			return nil, err
		}
		if l.conns.admit(c) {
			l.conns.m.accepted.Inc()
			return c, nil
		}
		l.conns.m.refused.Inc()
		l.conns.refuse(c)
	}
}

// refuse answers c 503 and closes it. The answer follows the request's
// headers (an answer before the request confuses clients: Go's reports an
// unsolicited response and fails), and the close follows the client's
// reading it (a close with the request unread would reset the
// connection, and the client might lose the answer). That takes a
// goroutine and up to a second: maxClosers at a time, the others are
// closed at once, unanswered.
func (cs *conns) refuse(c net.Conn) {
	select {
	case cs.closers <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-cs.closers }()
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, 64<<10))); err != nil {
			return
		}
		if _, err := c.Write(busy); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// warnFDs logs running out of descriptors with nothing idle to shed, at
// most once a minute.
func (cs *conns) warnFDs(err error) {
	cs.mu.Lock()
	now := time.Now()
	if now.Sub(cs.warned) < time.Minute {
		cs.mu.Unlock()
		return
	}
	cs.warned = now
	open := len(cs.open)
	cs.mu.Unlock()
	cs.log.Warn("out of file descriptors and no idle HTTP connection to close: new connections wait",
		"open_connections", open, "err", err)
}
