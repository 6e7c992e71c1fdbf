package httpboot

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
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
	tags     tagCache
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
	srv.SetFast(s.Fast(nil))
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
	res, err := s.resolver.Resolve(r.Context(), handoff.Request{Protocol: events.BootProtocolHTTP, Local: local, Remote: r.RemoteAddr, Name: r.URL.Path, Timeout: s.cfg.HandoffTimeout})
	if err != nil {
		s.errs.WithLabelValues("handoff").Inc()
		http.Error(w, rackplane.ErrorMessage(err), statusOf(err))
		return
	}
	s.inflight.Inc()
	start := time.Now()
	var sent, want int64
	if res.File != nil {
		sent, want = s.serveFile(w, r, res)
	} else {
		sent, want = s.serveConfig(w, r, res)
	}
	elapsed := time.Since(start)
	s.inflight.Dec()
	s.bytes.Add(float64(sent))
	var terr error
	if sent < want {
		terr = fmt.Errorf("sent %d of %d bytes: client went away", sent, want)
		s.errs.WithLabelValues("transfer").Inc()
	}
	s.resolver.Finish(res, handoff.Outcome{Bytes: sent, Duration: elapsed, Err: terr})
}

// Header values set on every file: assigned, not Set, which would
// canonicalise the key and allocate a slice each time.
var (
	octetStream = []string{"application/octet-stream"}
	bytesUnit   = []string{"bytes"}
)

// serveFile sends a file and returns the body bytes sent and those due.
// The common requests (the whole file, or one range of it, without
// conditions) are answered here, the file going out with sendfile(2)
// whole or in part; the others (conditional, several ranges, a range
// beyond the end) go to http.ServeContent, which copies a range through
// user space.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, res *handoff.Result) (sent, want int64) {
	h := w.Header()
	// One array for the values of the header set here.
	vals := make([]string, 4)
	vals[0] = etag(res.Path, res.VersionID, res.Size, res.ModTime.UnixNano())
	h["Content-Type"] = octetStream
	h["Etag"] = vals[0:1:1]
	start, length, ok := int64(0), res.Size, true
	if conditional(r.Header) {
		ok = false
	} else if rng := r.Header["Range"]; len(rng) > 0 {
		start, length, ok = singleRange(rng, res.Size)
	}
	if !ok {
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", res.ModTime, res.File)
		if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && r.Method == http.MethodGet && cw.status < 300 {
			want = n
		}
		return cw.n, want
	}
	if !res.ModTime.IsZero() && !res.ModTime.Equal(unixEpoch) {
		vals[1] = res.ModTime.UTC().Format(http.TimeFormat)
		h["Last-Modified"] = vals[1:2:2]
	}
	h["Accept-Ranges"] = bytesUnit
	vals[2] = strconv.FormatInt(length, 10)
	h["Content-Length"] = vals[2:3:3]
	status := http.StatusOK
	if r.Header["Range"] != nil {
		status = http.StatusPartialContent
		vals[3] = "bytes " + strconv.FormatInt(start, 10) + "-" + strconv.FormatInt(start+length-1, 10) + "/" + strconv.FormatInt(res.Size, 10)
		h["Content-Range"] = vals[3:4:4]
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead || length == 0 {
		return 0, 0
	}
	if start != 0 {
		if _, err := res.File.Seek(start, io.SeekStart); err != nil {
			return 0, length
		}
	}
	// The header goes out first, on its own: net/http would otherwise
	// read the first 512 bytes of the file through user space to sniff
	// them before it hands the rest to sendfile.
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	// A LimitedReader of the *os.File, which net/http hands to the
	// connection's ReadFrom and the kernel sends with sendfile(2): an
	// io.SectionReader, what http.ServeContent gives for a range, would
	// be copied through user space.
	sent, _ = io.Copy(w, &io.LimitedReader{R: res.File, N: length})
	return sent, length
}

var unixEpoch = time.Unix(0, 0)

// serveConfig sends a rendered config. A config is rendered per
// request; caching it would boot a machine from a stale decision.
func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request, res *handoff.Result) (sent, want int64) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("ETag", contentETag(res.Content))
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", res.ModTime, res.Reader())
	if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && r.Method == http.MethodGet && cw.status < 300 {
		want = n
	}
	return cw.n, want
}

// conditional says whether a request has conditions http.ServeContent
// evaluates.
func conditional(h http.Header) bool {
	return h["If-Match"] != nil || h["If-None-Match"] != nil || h["If-Modified-Since"] != nil ||
		h["If-Unmodified-Since"] != nil || h["If-Range"] != nil
}

// singleRange parses a Range header of one satisfiable byte range of a
// file of size bytes ("bytes=a-b", "bytes=a-", "bytes=-n"), as
// http.ServeContent would; ok is false for anything else, which
// ServeContent answers (several ranges, a range past the end, a
// malformed header).
func singleRange(values []string, size int64) (start, length int64, ok bool) {
	if len(values) != 1 || size <= 0 {
		return 0, 0, false
	}
	spec, found := strings.CutPrefix(values[0], "bytes=")
	if !found {
		return 0, 0, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found || strings.ContainsAny(last, ", ") || strings.ContainsAny(first, ", ") {
		return 0, 0, false
	}
	if first == "" {
		// The last n bytes.
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, true
	}
	a, err := strconv.ParseInt(first, 10, 64)
	if err != nil || a < 0 || a >= size {
		return 0, 0, false
	}
	b := size - 1
	if last != "" {
		if b, err = strconv.ParseInt(last, 10, 64); err != nil || b < a {
			return 0, 0, false
		}
		b = min(b, size-1)
	}
	return a, b - a + 1, true
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

// etag names a file's version: its path, version, size and time. It is
// a hash of them, so that it tells nothing of the store.
func etag(path, version string, size, modTime int64) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(size))
	binary.BigEndian.PutUint64(b[8:], uint64(modTime))
	h := sha256.New()
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write([]byte(version))
	h.Write([]byte{0})
	h.Write(b[:])
	var sum [sha256.Size]byte
	return `"` + hex.EncodeToString(h.Sum(sum[:0])[:16]) + `"`
}

func contentETag(content []byte) string {
	sum := sha256.Sum256(content)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
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

// Fast answers boot file requests on the connection itself
// (httpserver.FastHandler): those of the paths boot says are boot files
// (every path when boot is nil), plain GET and HEAD without conditions and
// with at most one range. The server's Handler answers the others, and
// gives the same answers.
func (s *Server) Fast(boot func(method, path string) bool) httpserver.FastHandler {
	return fastHandler{s: s, boot: boot}
}

type fastHandler struct {
	s    *Server
	boot func(method, path string) bool
}

func (h fastHandler) Takes(req *httpserver.FastRequest) bool {
	if req.Conditional || h.boot != nil && !h.boot(req.Method, req.Path) {
		return false
	}
	if req.Range != "" {
		// Of any file large enough: a range past the end is answered
		// once the size is known.
		if _, _, ok := singleRange([]string{req.Range}, math.MaxInt64); !ok {
			return false
		}
	}
	return true
}

func (h fastHandler) ServeFast(w *httpserver.FastWriter, req *httpserver.FastRequest) {
	s := h.s
	res, err := s.resolver.Resolve(context.Background(), handoff.Request{Protocol: events.BootProtocolHTTP, Local: req.LocalText, Remote: req.RemoteText, Name: req.Path, Timeout: s.cfg.HandoffTimeout,
		// fastAnswer sends the file at an offset (FastWriter.SendFile).
		Shared: true})
	if err != nil {
		s.errs.WithLabelValues("handoff").Inc()
		fastError(w, req, statusOf(err), rackplane.ErrorMessage(err), "")
		return
	}
	s.inflight.Inc()
	start := time.Now()
	sent, want := s.fastAnswer(w, req, res)
	elapsed := time.Since(start)
	s.inflight.Dec()
	s.bytes.Add(float64(sent))
	var terr error
	if sent < want {
		terr = fmt.Errorf("sent %d of %d bytes: client went away", sent, want)
		s.errs.WithLabelValues("transfer").Inc()
	}
	s.resolver.Finish(res, handoff.Outcome{Bytes: sent, Duration: elapsed, Err: terr})
}

// fastAnswer sends res as serveFile and serveConfig do, and returns the
// body bytes sent and due.
func (s *Server) fastAnswer(w *httpserver.FastWriter, req *httpserver.FastRequest, res *handoff.Result) (sent, want int64) {
	start, length, status := int64(0), res.Size, http.StatusOK
	if req.Range != "" && res.Size > 0 {
		// A range of an empty file is ignored, as http.ServeContent does.
		var ok bool
		if start, length, ok = singleRange([]string{req.Range}, res.Size); !ok {
			fastError(w, req, http.StatusRequestedRangeNotSatisfiable, "invalid range: failed to overlap", "bytes */"+strconv.FormatInt(res.Size, 10))
			return 0, 0
		}
		status = http.StatusPartialContent
	}
	b := w.StartHead(status)
	if res.File != nil {
		tags := s.tags.of(res)
		b = httpserver.AppendField(b, "Content-Type", "application/octet-stream")
		b = httpserver.AppendField(b, "Etag", tags.etag)
		if tags.lastModified != "" {
			b = httpserver.AppendField(b, "Last-Modified", tags.lastModified)
		}
	} else {
		b = httpserver.AppendField(b, "Content-Type", "text/plain; charset=utf-8")
		b = httpserver.AppendField(b, "Cache-Control", "no-store")
		b = httpserver.AppendField(b, "Etag", contentETag(res.Content))
		if lm := lastModified(res.ModTime); lm != "" {
			b = httpserver.AppendField(b, "Last-Modified", lm)
		}
	}
	if status == http.StatusPartialContent {
		b = append(b, "\r\nContent-Range: bytes "...)
		b = strconv.AppendInt(b, start, 10)
		b = append(b, '-')
		b = strconv.AppendInt(b, start+length-1, 10)
		b = append(b, '/')
		b = strconv.AppendInt(b, res.Size, 10)
	}
	b = httpserver.AppendField(b, "Accept-Ranges", "bytes")
	b = append(b, "\r\nContent-Length: "...)
	b = strconv.AppendInt(b, length, 10)
	w.EndHead(b)
	if req.Method == http.MethodHead || length == 0 {
		return 0, 0
	}
	if res.File == nil {
		if w.Write(res.Content[start:start+length]) != nil {
			return 0, length
		}
		return length, length
	}
	sent, _ = w.SendFile(res.File, start, length)
	return sent, length
}

// lastModified is the Last-Modified value of a time, "" for none (as
// http.ServeContent leaves out a zero time or the epoch).
func lastModified(t time.Time) string {
	if t.IsZero() || t.Equal(unixEpoch) {
		return ""
	}
	return t.UTC().Format(http.TimeFormat)
}

// fileTags are the ETag and Last-Modified of a file's version.
type fileTags struct{ etag, lastModified string }

type fileTagKey struct {
	path, version string
	size, modTime int64
}

// tagCache keeps the fileTags of the files served lately. Both are
// functions of the key alone (path, version, size and time, which is all
// etag hashes), so a kept value is never stale: a replaced file has
// another size or time, hence another key. It saves a SHA-256 and a time
// format per request.
type tagCache struct {
	mu sync.Mutex
	m  map[fileTagKey]fileTags
}

// maxTags bounds the cache: past it, it starts anew.
const maxTags = 1024

func (c *tagCache) of(res *handoff.Result) fileTags {
	k := fileTagKey{res.Path, res.VersionID, res.Size, res.ModTime.UnixNano()}
	c.mu.Lock()
	t, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return t
	}
	t = fileTags{etag(k.path, k.version, k.size, k.modTime), lastModified(res.ModTime)}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxTags {
		c.m = make(map[fileTagKey]fileTags)
	}
	c.m[k] = t
	c.mu.Unlock()
	return t
}

// fastError answers as http.Error does (with contentRange, when not
// empty).
func fastError(w *httpserver.FastWriter, req *httpserver.FastRequest, status int, msg, contentRange string) {
	body := msg + "\n"
	fields := []string{"Content-Type", "text/plain; charset=utf-8", "X-Content-Type-Options", "nosniff", "Content-Length", strconv.Itoa(len(body))}
	if contentRange != "" {
		fields = append(fields, "Content-Range", contentRange)
	}
	if w.Head(status, fields...) == nil && req.Method != http.MethodHead {
		_ = w.Write([]byte(body))
	}
}
