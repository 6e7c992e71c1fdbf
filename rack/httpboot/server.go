package httpboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/rack/handoff"
)

// Config configures a Server.
type Config struct {
	// Addresses to listen on (default ":5248").
	Addresses []string
	// HTTP bounds the server Run runs (default httpserver.DefaultConfig);
	// its write timeout bounds a stall, not a download, as a kernel over
	// a slow link takes its time.
	HTTP httpserver.Config
	// HandoffTimeout bounds one hand-off decision (default 3s).
	HandoffTimeout time.Duration
}

func (c *Config) validate() error {
	if len(c.Addresses) == 0 {
		c.Addresses = []string{":5248"}
	}
	for _, a := range c.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "httpboot: address %q is not host:port (%v)", a, err)
		}
	}
	if c.HTTP == (httpserver.Config{}) {
		c.HTTP = httpserver.DefaultConfig()
	}
	if err := c.HTTP.Validate("http-"); err != nil {
		return rackplane.WrapError(rackplane.EINVALID, err, "httpboot: %v", err)
	}
	if c.HandoffTimeout <= 0 {
		c.HandoffTimeout = 3 * time.Second
	}
	return nil
}

// Server serves boot files over HTTP.
type Server struct {
	cfg      Config
	resolver *handoff.Resolver
	log      *slog.Logger

	mu  sync.Mutex
	lns []net.Listener
	reg prometheus.Registerer

	inflight prometheus.Gauge
	bytes    prometheus.Counter
	errs     *prometheus.CounterVec
}

// NewServer returns a server; Listen and Run start it, or mount Handler
// on a mux of the rack's own.
func NewServer(cfg Config, resolver *handoff.Resolver, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if resolver == nil || log == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "httpboot: resolver and logger are required")
	}
	m, err := handoff.NewFrontendMetrics(reg, "rackplane_http_boot", "HTTP boot",
		"handoff (refused or not found), transfer (client went away), method")
	if err != nil {
		return nil, fmt.Errorf("httpboot: %w", err)
	}
	s := &Server{cfg: cfg, resolver: resolver, log: log, reg: reg, inflight: m.InFlight, bytes: m.Bytes, errs: m.Errors}
	return s, nil
}

// Listen binds every configured address. Run calls it when it was not.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lns != nil {
		return nil
	}
	for _, a := range s.cfg.Addresses {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			s.lns = nil
			return fmt.Errorf("httpboot: listen %s: %w", a, err)
		}
		s.lns = append(s.lns, ln)
	}
	return nil
}

// Addrs returns the bound addresses (after Listen).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.lns))
	for i, l := range s.lns {
		out[i] = l.Addr()
	}
	return out
}

// Run serves until ctx ends, within the bounds of Config.HTTP; its
// connection metrics are labelled server="httpboot". (A rack serves
// Handler on its own bounded server instead.)
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	srv, err := httpserver.New(s.cfg.HTTP, "httpboot", s.Handler(), s.log, s.reg)
	if err != nil {
		return fmt.Errorf("httpboot: %w", err)
	}
	s.mu.Lock()
	lns := s.lns
	s.mu.Unlock()
	// The bound addresses: a configured port 0 is the one the system chose.
	bound := make([]string, len(lns))
	for i, l := range lns {
		bound[i] = l.Addr().String()
	}
	s.log.Info("http boot serving", "addresses", bound)
	return srv.Serve(ctx, lns...)
}

// Handler serves boot files at every path.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	local := ""
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		local = a.String()
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.errs.WithLabelValues("method").Inc()
		s.resolver.Reject(events.BootRequestRejected{Protocol: events.BootProtocolHTTP, Local: local, Remote: r.RemoteAddr, Reason: "method", Detail: r.Method + " " + r.URL.Path})
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandoffTimeout)
	res, err := s.resolver.Resolve(hctx, handoff.Request{Protocol: events.BootProtocolHTTP, Local: local, Remote: r.RemoteAddr, Name: r.URL.Path})
	cancel()
	if err != nil {
		s.errs.WithLabelValues("handoff").Inc()
		http.Error(w, rackplane.ErrorMessage(err), statusOf(err))
		return
	}
	h := w.Header()
	if res.File != nil {
		h.Set("Content-Type", "application/octet-stream")
		h.Set("ETag", etag(res.Path, res.VersionID, strconv.FormatInt(res.Size, 10), strconv.FormatInt(res.ModTime.UnixNano(), 10)))
	} else {
		// A config is rendered per request; caching it would boot a
		// machine from a stale decision.
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("ETag", etag(string(res.Content)))
	}
	cw := &countingWriter{ResponseWriter: w}
	s.inflight.Inc()
	start := time.Now()
	http.ServeContent(cw, r, "", res.ModTime, res.Reader())
	elapsed := time.Since(start)
	s.inflight.Dec()
	s.bytes.Add(float64(cw.n))
	var terr error
	if want, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && r.Method == http.MethodGet && cw.status < 300 && cw.n < want {
		terr = fmt.Errorf("sent %d of %d bytes: client went away", cw.n, want)
		s.errs.WithLabelValues("transfer").Inc()
	}
	s.resolver.Finish(res, handoff.Outcome{Bytes: cw.n, Duration: elapsed, Err: terr})
}

func statusOf(err error) int {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND:
		return http.StatusNotFound
	case rackplane.EFORBIDDEN:
		return http.StatusForbidden
	default:
		return http.StatusServiceUnavailable
	}
}

func etag(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		io.WriteString(h, p)
		h.Write([]byte{0})
	}
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// countingWriter counts body bytes and keeps the ReaderFrom of the
// underlying writer, which is what lets net/http use sendfile.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	c.n += n
	return n, err
}
