package httpserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
	"github.com/rackplane/rackplane/internal/metrictest"
)

// envChild makes the test binary a server whose descriptor limit is the
// value given, for the tests that run out of descriptors: the limit is
// the whole process's, so the server needs one of its own.
const envChild = "HTTPSERVER_TEST_CHILD_NOFILE"

func TestMain(m *testing.M) {
	if v := os.Getenv(envChild); v != "" {
		os.Exit(serveChild(v))
	}
	os.Exit(m.Run())
}

// testHandler answers / with 200, reads the body of POST /slow, and
// serves /metrics from reg.
func testHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
			return
		}
		io.WriteString(w, "read\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return mux
}

// start serves h within cfg on a loopback port until the test ends.
func start(t *testing.T, cfg httpserver.Config, h func(prometheus.Gatherer) http.Handler) (string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := httpserver.New(cfg, "test", h(reg), slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String(), reg
}

func serveChild(nofile string) int {
	n, err := strconv.ParseUint(nofile, 10, 64)
	if err == nil {
		var lim syscall.Rlimit
		if err = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
			lim.Cur = n
			err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	cfg := httpserver.DefaultConfig()
	cfg.ReadHeaderTimeout, cfg.ReadTimeout = 2*time.Second, 2*time.Second
	reg := prometheus.NewRegistry()
	srv, err := httpserver.New(cfg, "child", testHandler(reg), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	fmt.Println(ln.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// metric reads one sample of a text exposition: name{server="child"...}.
func metric(t *testing.T, addr, name, labels string) float64 {
	t.Helper()
	status, body, err := httpservertest.Get("http://"+addr+"/metrics", nil)
	if err != nil || status != 200 {
		t.Fatalf("metrics: %d %v", status, err)
	}
	for line := range strings.Lines(body) {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], name+"{") && strings.Contains(f[0], labels) {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	t.Fatalf("no %s{%s} in the metrics", name, labels)
	return 0
}

// TestIdleFloodShedsOldest: 2,000 idle connections to a server that keeps
// 64: it closes the ones idle longest, a new client gets its answer, and
// the metrics say what happened.
func TestIdleFloodShedsOldest(t *testing.T) {
	cfg := httpserver.DefaultConfig()
	cfg.MaxConns = 64
	addr, reg := start(t, cfg, testHandler)
	for _, mode := range []struct{ name, request string }{{"silent", ""}, {"keep-alive", httpservertest.Request("/")}} {
		t.Run(mode.name, func(t *testing.T) {
			flood := httpservertest.Idle(t, addr, 2000, mode.request)
			defer flood.Stop()
			if flood.Result.Opened != 2000 {
				t.Fatalf("flood: %+v", flood.Result)
			}
			if status, body, err := httpservertest.Get("http://"+addr+"/", nil); status != 200 || err != nil {
				t.Fatalf("fresh client: %d %q %v", status, body, err)
			}
			open := metrictest.Value(t, reg, "rackplane_http_connections_open", nil)
			shed := metrictest.Value(t, reg, "rackplane_http_connections_shed_total", map[string]string{"reason": "limit"})
			t.Logf("flood %+v: %v open, %v shed so far", flood.Result, open, shed)
			if open > 64 || shed < 2000-64 {
				t.Errorf("%v open (max 64), %v shed", open, shed)
			}
		})
	}
}

// TestBusyServerRefusesNewConnections: with every connection inside a
// handler, a new one gets a 503 at once rather than waiting.
func TestBusyServerRefusesNewConnections(t *testing.T) {
	cfg := httpserver.DefaultConfig()
	cfg.MaxConns = 16
	cfg.ReadHeaderTimeout, cfg.ReadTimeout = 3*time.Second, 3*time.Second
	entered := make(chan struct{}, 16)
	addr, reg := start(t, cfg, func(g prometheus.Gatherer) http.Handler {
		h := testHandler(g)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				entered <- struct{}{}
			}
			h.ServeHTTP(w, r)
		})
	})
	slow := httpservertest.Slow(t, addr, 16, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", 200*time.Millisecond)
	for range 16 {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("slow bodies not in their handlers: %s", slow.Summary())
		}
	}
	status, body, err := httpservertest.Get("http://"+addr+"/", nil)
	if status != 503 || !strings.Contains(body, `"unavailable"`) {
		t.Fatalf("new connection while all are in handlers: %d %q %v, want 503", status, body, err)
	}
	if n := metrictest.Value(t, reg, "rackplane_http_connections_refused_total", nil); n != 1 {
		t.Errorf("%v connections counted refused, want 1", n)
	}
	if held := slow.WaitReleased(20 * time.Second); held > 0 {
		t.Fatalf("slow bodies still held: %s", slow.Summary())
	}
	if status, _, err := httpservertest.Get("http://"+addr+"/", nil); status != 200 {
		t.Fatalf("after the slow bodies: %d %v", status, err)
	}
}

// TestSlowBodiesAreCut: bodies trickled a byte at a time are cut at the
// read timeout, and answered, while other clients are served.
func TestSlowBodiesAreCut(t *testing.T) {
	cfg := httpserver.DefaultConfig()
	cfg.ReadHeaderTimeout, cfg.ReadTimeout = 2*time.Second, 2*time.Second
	addr, reg := start(t, cfg, testHandler)
	slow := httpservertest.Slow(t, addr, 200, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n", 200*time.Millisecond)
	if status, _, err := httpservertest.Get("http://"+addr+"/", nil); status != 200 {
		t.Fatalf("fresh client among slow bodies: %d %v", status, err)
	}
	if held := slow.WaitReleased(30 * time.Second); held > 0 {
		t.Fatalf("slow bodies still held: %s", slow.Summary())
	}
	t.Logf("slow bodies: %s", slow.Summary())
	if n := metrictest.Value(t, reg, "rackplane_http_requests_refused_total", map[string]string{"reason": "body_timeout"}); n != 200 {
		t.Errorf("%v body timeouts counted, want 200", n)
	}
}

// TestDescriptorLimit runs a server whose process may open 128 files
// (its connection limit is the default 4096): 1,000 idle connections shed
// the oldest at the descriptor limit; when every descriptor is a request
// in its handler, accepting backs off rather than spins, and the server
// recovers when they end.
func TestDescriptorLimit(t *testing.T) {
	child := httpservertest.StartChild(t, envChild+"=128")
	line, err := child.ReadLine(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	addr := string(line)

	flood := httpservertest.Idle(t, addr, 1000, "")
	if status, body, err := httpservertest.Get("http://"+addr+"/", nil); status != 200 {
		t.Fatalf("fresh client after 1,000 idle connections: %d %q %v", status, body, err)
	}
	shed := metric(t, addr, "rackplane_http_connections_shed_total", `reason="fd_limit"`)
	t.Logf("idle flood %+v: %v shed at the descriptor limit", flood.Result, shed)
	if shed == 0 {
		t.Error("nothing shed at the descriptor limit")
	}
	flood.Stop()

	// 300 requests in their handlers, more than the descriptors: those
	// beyond wait in the listen queue while accept fails and backs off.
	before := metric(t, addr, "rackplane_http_accept_errors_total", `server="child"`)
	slow := httpservertest.Slow(t, addr, 300, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n", 200*time.Millisecond)
	if held := slow.WaitReleased(60 * time.Second); held > 0 {
		t.Fatalf("slow bodies still held: %s", slow.Summary())
	}
	t.Logf("slow bodies: %s", slow.Summary())
	if exited, err := child.Exited(); exited {
		t.Fatalf("server exited: %v", err)
	}
	status, _, err := httpservertest.Get("http://"+addr+"/", nil)
	if status != 200 {
		t.Fatalf("fresh client after the slow bodies: %d %v", status, err)
	}
	// Spinning on EMFILE would fail hundreds of thousands of times in
	// these seconds; net/http's back-off (5 ms doubling up to 1 s) fails
	// a few dozen times.
	errs := metric(t, addr, "rackplane_http_accept_errors_total", `server="child"`) - before
	t.Logf("%v accepts failed for want of descriptors while every one was in a handler", errs)
	if errs > 1000 {
		t.Errorf("%v failed accepts: accepting spins at the descriptor limit", errs)
	}
}

// TestWrites: a client that stops reading is cut off at the write
// timeout; a download that keeps moving is not, however long it takes;
// files go out whole, through http.ServeContent (sendfile) or one Write.
func TestWrites(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 16<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	path := filepath.Join(dir, "big")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	cut := map[string]chan error{}
	for _, p := range []string{"/file/stalled", "/file/slow", "/write/stalled", "/write/slow"} {
		cut[p] = make(chan error, 1)
	}
	cfg := httpserver.DefaultConfig()
	cfg.WriteTimeout = 5 * time.Second
	addr, _ := start(t, cfg, func(prometheus.Gatherer) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var err error
			if strings.HasPrefix(r.URL.Path, "/write/") {
				_, err = w.Write(big)
			} else {
				f, oerr := os.Open(path)
				if oerr != nil {
					t.Error(oerr)
					return
				}
				defer f.Close()
				cw := &errWriter{ResponseWriter: w}
				http.ServeContent(cw, r, "", time.Time{}, f)
				err = cw.err
			}
			cut[r.URL.Path] <- err
		})
	})
	for _, p := range []string{"/file", "/write"} {
		t.Run("stalled"+p, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET %s/stalled HTTP/1.1\r\nHost: x\r\n\r\n", p)
			select {
			case err := <-cut[p+"/stalled"]:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("write to a client not reading: %v, want a deadline exceeded", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("a client not reading holds the handler")
			}
		})
		t.Run("slow"+p, func(t *testing.T) {
			t.Parallel()
			// 16 MiB read 256 KiB every 100 ms: 6.4 s, past the write
			// timeout, and never 5 s without reading.
			resp, err := http.Get("http://" + addr + p + "/slow")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got []byte
			buf := make([]byte, 256<<10)
			for {
				n, err := io.ReadFull(resp.Body, buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err := <-cut[p+"/slow"]; err != nil {
				t.Fatalf("download that kept moving: %v", err)
			}
			if len(got) != len(big) || string(got) != string(big) {
				t.Fatalf("got %d bytes, want the file's %d", len(got), len(big))
			}
		})
	}
}

// errWriter keeps the first write error, which http.ServeContent drops;
// it passes ReadFrom on, as httpboot's writer does, so the file still
// goes out with sendfile.
type errWriter struct {
	http.ResponseWriter
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	if w.err == nil {
		w.err = err
	}
	return n, err
}

func (w *errWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	if w.err == nil {
		w.err = err
	}
	return n, err
}

// TestBodyLimit: a body over MaxBodyBytes is refused, declared or not.
func TestBodyLimit(t *testing.T) {
	cfg := httpserver.DefaultConfig()
	cfg.MaxBodyBytes = 4096
	addr, reg := start(t, cfg, testHandler)
	resp, err := http.Post("http://"+addr+"/slow", "text/plain", strings.NewReader(strings.Repeat("x", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared body over the limit: %d, want 413", resp.StatusCode)
	}
	// Chunked: the length is known only once read.
	resp, err = http.Post("http://"+addr+"/slow", "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("x", 5000))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Errorf("chunked body over the limit: %d", resp.StatusCode)
	}
	if n := metrictest.Value(t, reg, "rackplane_http_requests_refused_total", map[string]string{"reason": "body_too_large"}); n != 2 {
		t.Errorf("%v bodies counted too large, want 2", n)
	}
}

// TestHeaderLimit: headers over MaxHeaderBytes are refused (431) before
// any handler runs.
func TestHeaderLimit(t *testing.T) {
	addr, _ := start(t, httpserver.DefaultConfig(), testHandler)
	resp, _, err := httpservertest.Raw(addr, "GET", "/", map[string]string{"X-Big": strings.Repeat("x", 128<<10)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("128 KiB of headers: %d, want 431", resp.StatusCode)
	}
	resp, _, err = httpservertest.Raw(addr, "GET", "/", map[string]string{"X-Big": strings.Repeat("x", 32<<10)}, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("32 KiB of headers: %v %v, want 200", resp, err)
	}
}

func TestCheckText(t *testing.T) {
	tests := []struct {
		target string
		ok     bool
	}{
		{"/a/b?c=d&e=f", true},
		{"/caf%C3%A9?q=%E2%82%AC", true},
		{"/a?bad=%zz", true}, // dropped by url.ParseQuery: no handler sees it
		{"/a%00b", false},
		{"/a%FF", false},
		{"/%C0%80", false},
		{"/a?q=%00", false},
		{"/a?q=%E2%82", false},
		{"/a?%FF=1", false},
		{"/a?x=1;y=%00", true}, // a semicolon pair is dropped whole
	}
	for _, tt := range tests {
		r, err := http.NewRequest("GET", "http://x"+tt.target, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = httpserver.CheckText(r)
		if (err == nil) != tt.ok || err != nil && (rackplane.ErrorCode(err) != rackplane.EINVALID || rackplane.ErrorMessage(err) == "") {
			t.Errorf("%s: %v, want ok=%v", tt.target, err, tt.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := httpserver.DefaultConfig().Validate("http-"); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := httpserver.Config{ReadHeaderTimeout: 20 * time.Second, ReadTimeout: 10 * time.Second, MaxHeaderBytes: 1, MaxBodyBytes: 1, MaxConns: 1}
	err := bad.Validate("rack-http-")
	for _, want := range []string{"-rack-http-read-timeout", "-rack-http-write-timeout", "-rack-http-idle-timeout",
		"-rack-http-max-header-bytes", "-rack-http-max-body-bytes", "-rack-http-max-conns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not name %s: %v", want, err)
		}
	}
}

// TestStoppingEndsLongPolls: a handler holding its request open until
// Stopping answers as soon as the server begins to shut down, so the
// shutdown does not wait out its timeout for it; outside a request,
// Stopping never fires.
func TestStoppingEndsLongPolls(t *testing.T) {
	if httpserver.Stopping(context.Background()) != nil {
		t.Fatal("Stopping outside a request is not nil")
	}
	srv, err := httpserver.New(httpserver.DefaultConfig(), "test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-httpserver.Stopping(r.Context()):
			io.WriteString(w, "stopping\n")
		case <-time.After(time.Minute):
			io.WriteString(w, "waited\n")
		}
	}), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	answer := make(chan string, 1)
	go func() {
		_, body, err := httpservertest.Get("http://"+ln.Addr().String()+"/", nil)
		if err != nil {
			body = err.Error()
		}
		answer <- body
	}()
	time.Sleep(200 * time.Millisecond) // the request waits
	begin := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 2*time.Second {
		t.Errorf("the shutdown took %s with a long poll open", took)
	}
	if got := <-answer; got != "stopping\n" {
		t.Errorf("the long poll answered %q", got)
	}
}
