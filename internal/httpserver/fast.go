package httpserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// FastRequest is the head of a request a FastHandler may answer: a GET or
// HEAD of HTTP/1.1 without a body, whose path is plain (FastPath).
type FastRequest struct {
	Method string // http.MethodGet or http.MethodHead
	Path   string
	// Range is the Range header ("" when there is none).
	Range string
	// Conditional: the request has an If-* header.
	Conditional bool
	// Close: the client asked to close the connection after the answer.
	Close bool
	// Local and Remote are the connection's addresses, LocalText and
	// RemoteText their text (made once for the connection's requests).
	Local, Remote         net.Addr
	LocalText, RemoteText string
}

// A FastHandler answers some requests on the connection itself, without
// net/http's machinery (its per-request goroutine watching the connection,
// its header maps and buffers): for a hot path, boot files, that must cost
// what a static file server's costs. Every request it does not take, and
// every one that is not a plain GET or HEAD, goes to the server's
// http.Handler as it would without it, on the same connection.
type FastHandler interface {
	// Takes says, from the head alone, whether ServeFast answers req.
	// Neither keeps req past its return: the server reuses it.
	Takes(req *FastRequest) bool
	// ServeFast answers req through w, whole: a head, then as many body
	// bytes as it announced.
	ServeFast(w *FastWriter, req *FastRequest)
}

// SetFast makes the server answer the requests f takes itself. Call it
// before Serve.
func (s *Server) SetFast(f FastHandler) { s.fast = f }

// FastPath reports whether p is a path a FastHandler may be given: clean
// (what http.ServeMux would not redirect), with no escapes, query or
// fragment, in plain ASCII. The others go to net/http, which cleans,
// unescapes and checks them.
func FastPath(p string) bool {
	if len(p) == 0 || p[0] != '/' || len(p) > 1024 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '/':
			// No "//", "/./" or "/../", nor a trailing "/." or "/..".
			if i+1 < len(p) && p[i+1] == '/' {
				return false
			}
			if rest := p[i+1:]; rest == "." || rest == ".." || len(rest) >= 2 && rest[:2] == "./" || len(rest) >= 3 && rest[:3] == "../" {
				return false
			}
		case c == '.', c == '-', c == '_', c == '~', c == ':', c == '+', c == ',', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// FastWriter writes one answer on the connection.
//
// The head is kept until the body follows, so that the two leave in as
// few segments as the kernel can make of them: a small body goes in the
// same write, a file's head is sent with MSG_MORE (held, as TCP_CORK
// would, but without two more system calls) and leaves with the file's
// first pages. A head without a body goes once ServeFast returns.
type FastWriter struct {
	c  net.Conn
	rc syscall.RawConn // nil when c is not a TCP connection
	// timeout bounds each piece written (Config.WriteTimeout); armed is
	// when the write deadline was last set (zero: never).
	timeout time.Duration
	armed   time.Time
	buf     []byte
	pending bool // buf holds a head not sent yet
	close   bool
	err     error

	// The system call in progress through rc, and its outcome: the
	// callbacks are method values made once per connection, so that a
	// request allocates none.
	op struct {
		// send's
		p     []byte
		flags int
		n     int // sent
		// SendFile's: the file, where its bytes start, how many to send,
		// how many went, and how many had when the deadline last moved
		src                    int
		off, total, sent, mark int64
		eof                    bool
		err                    error // either's
	}
	sendFn, fileFn func(fd uintptr) bool
}

func newFastWriter(c net.Conn, timeout time.Duration) *FastWriter {
	w := &FastWriter{c: c, timeout: timeout, buf: make([]byte, 0, 512)}
	if tc, ok := c.(*net.TCPConn); ok {
		if rc, err := tc.SyscallConn(); err == nil {
			w.rc = rc
			w.sendFn, w.fileFn = w.sendOp, w.sendfileOp
		}
	}
	return w
}

// arm moves the write deadline a timeout ahead, unless it was moved
// within the last sixteenth of one, as deadlineWriter does: every write
// then has at least 15/16 of the timeout, and the answers of a busy
// keep-alive connection do not each move a runtime timer. The deadline
// stays set between answers (it only bounds writes, and each write arms
// it first); a connection handed to net/http has it cleared.
func (w *FastWriter) arm() {
	now := time.Now()
	if !w.armed.IsZero() && now.Sub(w.armed) < w.timeout/16 {
		return
	}
	w.armed = now
	_ = w.c.SetWriteDeadline(now.Add(w.timeout))
}

// Head sets the status line and the header: Date, Connection when the
// connection closes after it, then fields (name, value, name, value...),
// which must hold Content-Length. Values must be free of CR and LF. The
// head goes out with the body, or when ServeFast returns; the error is
// that of an earlier write.
func (w *FastWriter) Head(status int, fields ...string) error {
	b := w.StartHead(status)
	for i := 0; i+1 < len(fields); i += 2 {
		b = AppendField(b, fields[i], fields[i+1])
	}
	w.EndHead(b)
	return w.err
}

// StartHead begins a head in the writer's buffer: the status line, Date
// and Connection when the connection closes after it. The caller appends
// its fields (AppendField, or appends of its own) and hands the buffer to
// EndHead, and keeps no reference to it.
func (w *FastWriter) StartHead(status int) []byte {
	b := w.buf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nDate: "...)
	b = append(b, httpDate()...)
	if w.close {
		b = append(b, "\r\nConnection: close"...)
	}
	return b
}

// AppendField appends the header field "name: value" to a head. The
// value must be free of CR and LF.
func AppendField(b []byte, name, value string) []byte {
	b = append(b, "\r\n"...)
	b = append(b, name...)
	b = append(b, ": "...)
	return append(b, value...)
}

// EndHead ends the head StartHead began.
func (w *FastWriter) EndHead(b []byte) {
	w.buf = append(b, "\r\n\r\n"...)
	w.pending = true
}

// smallBody is the most a body may be to go in the head's write.
const smallBody = 4 << 10

// Write writes p (after the head), a piece at a time under the write
// timeout.
func (w *FastWriter) Write(p []byte) error {
	if w.pending {
		w.pending = false
		if len(p) <= smallBody {
			w.buf = append(w.buf, p...)
			return w.send(w.buf, 0)
		}
		if w.send(w.buf, syscall.MSG_MORE) != nil {
			return w.err
		}
	}
	return w.send(p, 0)
}

// flush sends a head that no body followed.
func (w *FastWriter) flush() error {
	if w.pending {
		w.pending = false
		return w.send(w.buf, 0)
	}
	return w.err
}

// send writes p, with flags (MSG_MORE) on a TCP connection.
func (w *FastWriter) send(p []byte, flags int) error {
	for len(p) > 0 && w.err == nil {
		w.arm()
		piece := p[:min(len(p), writeChunk)]
		var n int
		if w.rc == nil {
			n, w.err = w.c.Write(piece)
		} else {
			w.op.p, w.op.flags, w.op.n, w.op.err = piece, flags, 0, nil
			if err := w.rc.Write(w.sendFn); err != nil {
				w.err = err
			} else {
				n, w.err = w.op.n, w.op.err
			}
			w.op.p = nil
		}
		p = p[n:]
	}
	return w.err
}

// sendOp is send's system call (a RawConn.Write callback: false waits
// until the socket takes more).
func (w *FastWriter) sendOp(fd uintptr) bool {
	for {
		n, err := syscall.SendmsgN(int(fd), w.op.p, nil, nil, w.op.flags|syscall.MSG_NOSIGNAL)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case nil:
			w.op.n = n
		default:
			w.op.err = &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("sendmsg", err)}
		}
		return true
	}
}

// SendFile sends n bytes of f from offset off (after the head), with
// sendfile(2) at that offset when the connection is TCP; f's own offset
// is neither used nor moved, so that many answers may send from one
// descriptor at once. The write deadline is moved after every writeChunk
// sent, as the other writes move it, but one sendfile sends as much as
// the socket takes (up to maxSendfile): a whole image goes in tens of
// calls, not hundreds. It returns the bytes sent: fewer than n, with an
// error, when f ends first.
func (w *FastWriter) SendFile(f *os.File, off, n int64) (int64, error) {
	if w.pending && n > 0 {
		w.pending = false
		if w.send(w.buf, syscall.MSG_MORE) != nil {
			return 0, w.err
		}
	}
	if w.rc == nil {
		return w.copyFile(f, off, n)
	}
	defer runtime.KeepAlive(f)
	o := &w.op
	o.src, o.off, o.total, o.sent, o.eof, o.err = int(f.Fd()), off, n, 0, false, nil
	for o.sent < n && w.err == nil {
		w.arm()
		o.mark = o.sent
		if err := w.rc.Write(w.fileFn); err != nil {
			w.err = err
		}
		switch {
		case w.err != nil:
		case o.err == errors.ErrUnsupported && o.sent == 0:
			// No sendfile from this file (its file system cannot
			// splice): through user space instead.
			return w.copyFile(f, off, n)
		case o.err != nil:
			w.err = o.err
		case o.eof:
			w.err = io.ErrUnexpectedEOF // the file is shorter
		}
	}
	return o.sent, w.err
}

// maxSendfile is the most one sendfile(2) is asked for (nginx's
// sendfile_max_chunk): a fast client does not hold the thread in one long
// call.
const maxSendfile = 2 << 20

// sendfileOp is SendFile's system calls, a RawConn.Write callback: false
// waits until the socket takes more, true goes back to SendFile, which
// moves the write deadline, when a writeChunk went out since it last did
// (and when the file is sent, ends or fails).
func (w *FastWriter) sendfileOp(fd uintptr) bool {
	o := &w.op
	for o.sent < o.total {
		off := o.off + o.sent
		k, err := syscall.Sendfile(int(fd), o.src, &off, int(min(o.total-o.sent, maxSendfile)))
		if k > 0 {
			o.sent += int64(k)
		}
		switch err {
		case nil:
			if k == 0 {
				o.eof = true
				return true
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return o.sent-o.mark >= writeChunk
		case syscall.EINVAL, syscall.ENOSYS, syscall.EOPNOTSUPP:
			if o.sent == 0 {
				o.err = errors.ErrUnsupported
			} else {
				o.err = &net.OpError{Op: "sendfile", Net: "tcp", Err: os.NewSyscallError("sendfile", err)}
			}
			return true
		default:
			o.err = &net.OpError{Op: "sendfile", Net: "tcp", Err: os.NewSyscallError("sendfile", err)}
			return true
		}
	}
	return true
}

// copyFile sends n bytes of f from off through user space.
func (w *FastWriter) copyFile(f *os.File, off, n int64) (int64, error) {
	buf := make([]byte, min(n, writeChunk))
	var sent int64
	for sent < n && w.err == nil {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), n-sent)], off+sent)
		if k > 0 && w.Write(buf[:k]) == nil {
			sent += int64(k)
		}
		if err != nil && w.err == nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			w.err = err
		}
	}
	return sent, w.err
}

// dateCache is the Date header of the current second.
var dateCache atomic.Pointer[struct {
	sec  int64
	text string
}]

func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.text
	}
	d := &struct {
		sec  int64
		text string
	}{now.Unix(), now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

// fastConn is a connection the server reads requests from itself until
// one is not for the FastHandler, when net/http gets it.
type fastConn struct {
	net.Conn
	r *bufio.Reader
}

// Read gives net/http what was read ahead first.
func (c *fastConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// NetConn is the connection accepted, which conns knows it by.
func (c *fastConn) NetConn() net.Conn { return c.Conn }

// chanListener hands net/http the connections the fast path gives up.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// fastServer is the accept loop and connections of a server with a
// FastHandler.
type fastServer struct {
	s        *Server
	handoff  *chanListener
	mu       sync.Mutex
	conns    map[net.Conn]bool // true: inside a request
	stopping bool
	wg       sync.WaitGroup
}

// accept accepts on ln and reads the requests of each connection
// itself, handing a connection to net/http (through handoff) at its
// first request the FastHandler does not take.
func (f *fastServer) accept(ctx context.Context, ln net.Listener) error {
	var pause time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// As net/http's Serve: a growing pause.
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(pause):
				case <-ctx.Done():
				}
				continue
			}
			return err
		}
		pause = 0
		if !f.track(c, false) {
			f.finish(c)
			continue
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(c)
		}()
	}
}

// track notes c and whether it is inside a request; false when the
// server is stopping and c is to be closed.
func (f *fastServer) track(c net.Conn, busy bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return false
	}
	f.conns[c] = busy
	return true
}

func (f *fastServer) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

// stop closes the connections waiting for a request and waits, until
// ctx ends, for those inside one (then closes them too).
func (f *fastServer) stop(ctx context.Context) {
	f.mu.Lock()
	f.stopping = true
	for c, busy := range f.conns {
		if !busy {
			// Its goroutine wakes and closes it.
			_ = c.SetReadDeadline(time.Now())
		}
	}
	f.mu.Unlock()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		f.mu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		<-done
	}
}

// serve reads c's requests until one is not the FastHandler's.
func (f *fastServer) serve(c net.Conn) {
	s := f.s
	r := bufio.NewReaderSize(c, 4096)
	w := newFastWriter(c, s.cfg.WriteTimeout)
	// The connection's addresses, as text once for all its requests.
	local, remote := c.LocalAddr(), c.RemoteAddr()
	localText, remoteText := addrText(local), addrText(remote)
	// The read deadline: when it was set, and to which timeout. The idle
	// wait moves it only when it was set more than a sixteenth of the
	// timeout ago, as arm does the write deadline: a busy connection
	// waits at least 15/16 of IdleTimeout, and its requests do not each
	// move a runtime timer.
	var readSet time.Time
	var readFor time.Duration
	setRead := func(now time.Time, d time.Duration) {
		readSet, readFor = now, d
		_ = c.SetReadDeadline(now.Add(d))
	}
	setRead(time.Now(), s.cfg.ReadHeaderTimeout)
	// One FastRequest for all the connection's requests, and the text of
	// the last path and range, which the next request is likely to repeat.
	req := &FastRequest{}
	var last lastText
	for first := true; ; first = false {
		// Idle (sheddable) until the headers are all in, as net/http
		// counts it; the first request's wait is for its headers.
		if !first {
			if now := time.Now(); readFor != s.cfg.IdleTimeout || now.Sub(readSet) >= s.cfg.IdleTimeout/16 {
				setRead(now, s.cfg.IdleTimeout)
			}
		}
		if _, err := r.Peek(1); err != nil {
			f.finish(c)
			return
		}
		if !first && !headIn(r) {
			// Only what is still to come is bounded by the header
			// timeout: a head that came whole in one read is not.
			setRead(time.Now(), s.cfg.ReadHeaderTimeout)
		}
		head, n, err := readHead(r, min(s.cfg.MaxHeaderBytes, r.Size()))
		if err != nil {
			// Not in within the header timeout, or the client left.
			f.finish(c)
			return
		}
		*req = FastRequest{}
		ok := head != nil && parseHead(head, req, &last)
		if ok {
			req.Local, req.Remote, req.LocalText, req.RemoteText = local, remote, localText, remoteText
			ok = s.fast.Takes(req)
		}
		if !ok {
			// net/http answers it, and the rest of the connection, with
			// no deadline of the fast path left on it.
			f.untrack(c)
			_ = c.SetDeadline(time.Time{})
			select {
			case f.handoff.conns <- &fastConn{Conn: c, r: r}:
			case <-f.handoff.closed:
				f.finish(c)
			}
			return
		}
		_, _ = r.Discard(n)
		if !f.track(c, true) {
			f.finish(c)
			return
		}
		s.conns.setState(c, http.StateActive, false)
		w.close, w.err, w.pending = req.Close, nil, false
		s.fast.ServeFast(w, req)
		_ = w.flush()
		// Idle again. The write deadline stays: every write moves it
		// first (arm).
		s.conns.setState(c, http.StateIdle, false)
		if w.err != nil || w.close || !f.track(c, false) {
			f.finish(c)
			return
		}
	}
}

// headIn reports whether r holds a whole request head already.
func headIn(r *bufio.Reader) bool {
	b, _ := r.Peek(r.Buffered())
	return bytes.Contains(b, []byte("\r\n\r\n"))
}

// addrText is a's text ("" for none).
func addrText(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (f *fastServer) finish(c net.Conn) {
	f.untrack(c)
	f.s.conns.state(c, http.StateClosed)
	_ = c.Close()
}

// readHead waits for a request's head (up to the blank line) in r without
// consuming it, and returns it and its length; a nil head when it is
// longer than limit (net/http answers that), an error when the
// connection fails or times out first.
func readHead(r *bufio.Reader, limit int) (head []byte, n int, err error) {
	for want := 1; ; {
		_, err := r.Peek(want)
		// Peek gives what it was asked for: the head may be all in.
		b, _ := r.Peek(min(r.Buffered(), limit))
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return b[:i+2], i + 4, nil
		}
		if len(b) >= limit {
			return nil, 0, nil
		}
		if err != nil {
			return nil, 0, err
		}
		want = len(b) + 1
	}
}

// lastText is the text of a connection's last path and range: a client
// asks for one file again and again, and its text is then made once.
type lastText struct{ path, rng string }

// text is b as a string: *kept when they are equal (the comparison
// allocates nothing), else a new one, which it keeps.
func (lastText) text(kept *string, b []byte) string {
	if *kept != string(b) {
		*kept = string(b)
	}
	return *kept
}

// parseHead parses a request head of HTTP/1.1 GET or HEAD without a body
// into req; false for anything else (net/http answers those). last keeps
// the text of the connection's last path and range.
func parseHead(head []byte, req *FastRequest, last *lastText) bool {
	// Lines end in CRLF and nowhere else: a bare LF or CR (which net/http
	// takes as a line's end, so the two would read different heads, and a
	// request could be smuggled in one's body), NUL or another control
	// character sends the request to net/http, which decides.
	for i, c := range head {
		switch {
		case c == '\r':
			if i+1 >= len(head) || head[i+1] != '\n' {
				return false
			}
		case c == '\n':
			if i == 0 || head[i-1] != '\r' {
				return false
			}
		case c < ' ' && c != '\t', c == 0x7f:
			return false
		}
	}
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	method, line, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(line, []byte(" "))
	if !ok1 || !ok2 || string(proto) != "HTTP/1.1" {
		return false
	}
	switch string(method) {
	case http.MethodGet:
		req.Method = http.MethodGet
	case http.MethodHead:
		req.Method = http.MethodHead
	default:
		return false
	}
	req.Path = last.text(&last.path, target)
	if !FastPath(req.Path) {
		return false
	}
	hosts, ranges := 0, 0
	for len(rest) > 0 {
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(field, []byte(":"))
		if !ok || len(name) == 0 || !token(name) {
			return false // also a folded line, which starts with a space
		}
		value = bytes.TrimSpace(value)
		if !httpguts.ValidHeaderFieldValue(string(value)) {
			return false
		}
		switch {
		case equalFold(name, "host"):
			hosts++
			if !httpguts.ValidHostHeader(string(value)) {
				return false // net/http answers 400
			}
		case equalFold(name, "range"):
			// Counted, not tested for a value: an empty Range before
			// another is two, as net/http's Header.Get reads them.
			if ranges++; ranges > 1 {
				return false
			}
			req.Range = last.text(&last.rng, value)
		case equalFold(name, "connection"):
			for _, opt := range bytes.Split(value, []byte(",")) {
				opt = bytes.TrimSpace(opt)
				switch {
				case equalFold(opt, "close"):
					req.Close = true
				case equalFold(opt, "keep-alive"), len(opt) == 0:
				default:
					return false // an upgrade, or something else net/http knows
				}
			}
		case equalFold(name, "content-length"):
			if string(value) != "0" {
				return false
			}
		case equalFold(name, "transfer-encoding"), equalFold(name, "expect"), equalFold(name, "upgrade"):
			return false
		case len(name) > 3 && equalFold(name[:3], "if-"):
			req.Conditional = true
		}
	}
	return hosts == 1
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// token reports whether b is an RFC 9110 token (a field name).
func token(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}
