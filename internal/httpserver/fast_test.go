package httpserver_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/internal/httpserver"
)

// fastTest answers the paths under /fast/ itself, except /fast/slow.
type fastTest struct{}

func (fastTest) Takes(req *httpserver.FastRequest) bool {
	return strings.HasPrefix(req.Path, "/fast/") && req.Path != "/fast/slow" && !req.Conditional
}

func (fastTest) ServeFast(w *httpserver.FastWriter, req *httpserver.FastRequest) {
	body := "fast " + req.Method + " " + req.Path + " range=" + req.Range + "\n"
	if w.Head(200, "Content-Type", "text/plain", "Content-Length", itoa(len(body))) == nil && req.Method == http.MethodGet {
		_ = w.Write([]byte(body))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestFastPath: the requests the FastHandler takes are answered by it,
// the others by the handler, on one keep-alive connection in any order
// and pipelined; what is not a plain GET or HEAD never reaches it.
func TestFastPath(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "mux "+r.Method+" "+r.URL.Path+"\n")
	})
	cfg := httpserver.DefaultConfig()
	srv, err := httpserver.New(cfg, "fast", mux, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetFast(fastTest{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	tests := []struct{ req, want string }{
		{"GET /fast/a HTTP/1.1\r\nHost: x\r\n\r\n", "fast GET /fast/a range=\n"},
		{"GET /fast/b HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n", "fast GET /fast/b range=bytes=1-2\n"},
		{"HEAD /fast/c HTTP/1.1\r\nhost: x\r\n\r\n", ""},
		{"GET /fast/d?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", "mux GET /fast/d\n"},
		{"GET /fast/%61 HTTP/1.1\r\nHost: x\r\n\r\n", "mux GET /fast/a\n"},
		{"GET /fast/slow HTTP/1.1\r\nHost: x\r\n\r\n", "mux GET /fast/slow\n"},
		// Handed over: the rest of the connection is net/http's.
		{"GET /fast/e HTTP/1.1\r\nHost: x\r\n\r\n", "mux GET /fast/e\n"},
	}
	// Two on their own, then the rest pipelined.
	for i, tt := range tests {
		if i < 2 || i == 2 {
			io.WriteString(c, tt.req)
		}
		if i == 2 {
			for _, rest := range tests[3:] {
				io.WriteString(c, rest.req)
			}
		}
		method := "GET"
		if strings.HasPrefix(tt.req, "HEAD") {
			method = "HEAD"
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%q: %v", tt.req, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != tt.want || resp.Header.Get("Date") == "" {
			t.Errorf("%q: %d %q %v, want %q", tt.req, resp.StatusCode, b, resp.Header, tt.want)
		}
		if method == "HEAD" && resp.ContentLength != int64(len("fast HEAD /fast/c range=\n")) {
			t.Errorf("HEAD: length %d", resp.ContentLength)
		}
	}

	// Not plain GETs or HEADs: net/http's.
	for _, req := range []string{
		"POST /fast/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
		"GET /fast/a HTTP/1.0\r\n\r\n",
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\n\r\n",
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
		"GET /fast/../a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /fast//a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nX-Long: " + strings.Repeat("a", 5000) + "\r\n\r\n",
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%.60q: %v", req, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
		c.Close()
		if strings.HasPrefix(string(b), "fast") {
			t.Errorf("%.60q: answered by the fast path", req)
		}
	}

	// Connection: close closes after the answer.
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "GET /fast/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c2)
	if err != nil || !strings.Contains(string(all), "Connection: close") || !strings.HasSuffix(string(all), "fast GET /fast/z range=\n") {
		t.Errorf("Connection: close: %q %v", all, err)
	}

	// An idle fast connection is closed at shutdown.
	c3, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	io.WriteString(c3, "GET /fast/y HTTP/1.1\r\nHost: x\r\n\r\n")
	br3 := bufio.NewReader(c3)
	if resp, err := http.ReadResponse(br3, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(resp.Body)
	}
	cancel()
	c3.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br3.ReadByte(); err != io.EOF {
		t.Errorf("idle fast connection at shutdown: %v, want EOF", err)
	}
}
