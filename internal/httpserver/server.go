package httpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
)

// Server is an http.Server within a Config's bounds.
type Server struct {
	cfg   Config
	name  string
	log   *slog.Logger
	hs    *http.Server
	conns *conns
	m     *metrics
	fast  FastHandler
}

// shutdownTimeout is how long Serve waits, once its context ends, for the
// requests in progress.
const shutdownTimeout = 5 * time.Second

// New returns a server named name (the server label of its metrics, "api"
// or "rack") that serves h within cfg's bounds.
func New(cfg Config, name string, h http.Handler, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate("http-"); err != nil {
		return nil, fmt.Errorf("httpserver %s: %w", name, err)
	}
	if h == nil || log == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "httpserver %s: a handler and a logger are required", name)
	}
	s := &Server{cfg: cfg, name: name, log: log}
	var err error
	s.m, err = newMetrics(name, func() float64 { return float64(s.conns.count()) }, reg)
	if err != nil {
		return nil, err
	}
	s.conns = newConns(cfg.MaxConns, s.m, log)
	s.hs = &http.Server{
		Handler:           s.bound(h),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		// No WriteTimeout: it would cut off a long download, and a long
		// poll. Writes are bounded piece by piece instead (bound).
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes,
		ConnState:      s.conns.state,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Serve serves on every listener until ctx ends, then shuts down: it
// stops accepting, closes idle connections and waits a few seconds for
// the requests in progress. Handlers' contexts derive from ctx's values.
func (s *Server) Serve(ctx context.Context, lns ...net.Listener) error {
	if len(lns) == 0 {
		return rackplane.Errorf(rackplane.EINVALID, "httpserver %s: no listener", s.name)
	}
	stopping := make(chan struct{})
	s.hs.RegisterOnShutdown(func() { close(stopping) })
	base := context.WithValue(context.WithoutCancel(ctx), stoppingKey{}, stopping)
	s.hs.BaseContext = func(net.Listener) context.Context { return base }
	s.warnDescriptors()
	errc := make(chan error, len(lns)+1)
	var fast *fastServer
	if s.fast != nil {
		// The fast path accepts; net/http serves what it hands over.
		fast = &fastServer{s: s, conns: map[net.Conn]bool{},
			handoff: &chanListener{addr: lns[0].Addr(), conns: make(chan net.Conn), closed: make(chan struct{})}}
		go func() { errc <- s.hs.Serve(fast.handoff) }()
		fctx, stopAccepting := context.WithCancel(ctx)
		defer stopAccepting()
		for _, ln := range lns {
			go func() { errc <- fast.accept(fctx, &listener{Listener: ln, conns: s.conns}) }()
		}
	} else {
		for _, ln := range lns {
			go func() { errc <- s.hs.Serve(&listener{Listener: ln, conns: s.conns}) }()
		}
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if fast != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		fast.stop(sctx)
	}
	_ = s.hs.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s http: %w", s.name, err)
	}
	return nil
}

type stoppingKey struct{}

// Stopping is closed when the server serving the request of ctx begins to
// shut down (nil, which never is, outside a Server's request). A handler
// that holds its request open, a long poll, answers then as if its wait
// were up, rather than holding the shutdown up for shutdownTimeout.
func Stopping(ctx context.Context) <-chan struct{} {
	c, _ := ctx.Value(stoppingKey{}).(chan struct{})
	return c
}

// warnDescriptors says when the process may run out of file descriptors
// before the server reaches MaxConns: it then sheds idle connections at
// the descriptor limit instead, and other parts of the process (NATS,
// PostgreSQL, TFTP) may be refused theirs.
func (s *Server) warnDescriptors() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	const reserve = 256 // the process's other files and sockets
	if uint64(s.cfg.MaxConns)+reserve > lim.Cur {
		s.log.Warn("the descriptor limit is below the HTTP connection limit: raise it (LimitNOFILE=, ulimit -n) or lower -http-max-conns",
			"server", s.name, "max_conns", s.cfg.MaxConns, "rlimit_nofile", lim.Cur)
	}
}

// bound puts h's requests within the body and write bounds, and refuses
// bad text in paths and queries before h sees them.
func (s *Server) bound(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := CheckText(r); err != nil {
			s.m.requests.WithLabelValues("bad_text").Inc()
			WriteError(w, http.StatusBadRequest, err)
			return
		}
		if r.ContentLength > s.cfg.MaxBodyBytes {
			s.m.requests.WithLabelValues("body_too_large").Inc()
			w.Header().Set("Connection", "close")
			WriteError(w, http.StatusRequestEntityTooLarge, rackplane.Errorf(rackplane.EINVALID,
				"request body of %d bytes: at most %d are taken", r.ContentLength, s.cfg.MaxBodyBytes))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &body{ReadCloser: http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), m: s.m}
		}
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
		h.ServeHTTP(dw, r)
		// What the handler left in the buffers goes out after it returns.
		dw.arm()
	})
}

// body counts the ways a request body is refused, once per request.
type body struct {
	io.ReadCloser
	m    *metrics
	once sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			b.once.Do(func() { b.m.requests.WithLabelValues("body_too_large").Inc() })
		case errors.Is(err, os.ErrDeadlineExceeded):
			b.once.Do(func() { b.m.requests.WithLabelValues("body_timeout").Inc() })
		}
	}
	return n, err
}

// writeChunk is the most a response write may send under one write
// deadline: at the default 30 s, a client reading slower than about
// 4 KiB/s is cut off, and any faster one never is.
const writeChunk = 128 << 10

// deadlineWriter sets the connection's write deadline before each piece
// of the response. It keeps io.ReaderFrom, so a file still goes out with
// sendfile(2), a piece at a time.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	armed   time.Time // when the deadline was last set
}

// arm moves the write deadline a timeout ahead, unless it was moved
// within the last sixteenth of one: a deadline is a timer the runtime
// keeps, and a small answer (a boot file's range, an API call) would
// otherwise move it three times. Any write still has at least 15/16 of
// the timeout.
func (w *deadlineWriter) arm() {
	now := time.Now()
	if !w.armed.IsZero() && now.Sub(w.armed) < w.timeout/16 {
		return
	}
	w.armed = now
	_ = w.rc.SetWriteDeadline(now.Add(w.timeout))
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return w.ResponseWriter.Write(p)
	}
	var n int
	for len(p) > 0 {
		w.arm()
		k, err := w.ResponseWriter.Write(p[:min(len(p), writeChunk)])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// ReadFrom sends src a piece at a time. An *io.LimitedReader of a file
// (what http.ServeContent gives) is cut into LimitedReaders of the same
// file, which the kernel still sends with sendfile.
func (w *deadlineWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	inner, left := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, left = lr.R, lr.N
		defer func() { lr.N = left }()
	}
	var n int64
	for left != 0 {
		piece := int64(writeChunk)
		if left > 0 {
			piece = min(piece, left)
		}
		w.arm()
		k, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: piece})
		n += k
		if left > 0 {
			left -= k
		}
		if err != nil || k < piece {
			return n, err
		}
	}
	return n, nil
}

func (w *deadlineWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides ReadFrom, lest io.Copy call it back.
type writerOnly struct{ io.Writer }
