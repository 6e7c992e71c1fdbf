package httpserver_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/internal/httpserver"
)

func serveBoth(t *testing.T, fast bool) string {
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "mux "+r.Method+" "+r.URL.Path+" body="+string(b)+"\n")
	})
	srv, err := httpserver.New(httpserver.DefaultConfig(), "hostile", mux, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if fast {
		srv.SetFast(fastTest{})
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx, ln)
	t.Cleanup(cancel)
	return ln.Addr().String()
}

func rawExchange(t *testing.T, addr, req string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestFastPathReadsHeadsAsNetHTTP: the same bytes get the same answers,
// as many and with the same status, with the fast path and without it.
// A head the two would read differently (a bare LF ending a line for
// net/http, where a request can hide in a body; a malformed Host; a
// control character in a value) is left to net/http.
func TestFastPathReadsHeadsAsNetHTTP(t *testing.T) {
	slow, fast := serveBoth(t, false), serveBoth(t, true)
	smuggled := "GET /fast/secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	for _, req := range []string{
		// Bare LF ends a header line for net/http (textproto): a body.
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nX: y\nContent-Length: " + itoa(len(smuggled)) + "\r\n\r\n" + smuggled,
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		// Malformed Host, CTL in a value.
		"GET /fast/a HTTP/1.1\r\nHost: a b/c\r\nConnection: close\r\n\r\n",
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\nConnection: close\r\n\r\n",
		"GET /fast/a HTTP/1.1\r\nHost: x\r\nX: a\rb\r\nConnection: close\r\n\r\n",
	} {
		s, f := rawExchange(t, slow, req), rawExchange(t, fast, req)
		ns, nf := strings.Count(s, "HTTP/1.1 "), strings.Count(f, "HTTP/1.1 ")
		st, _, _ := strings.Cut(s, "\r\n")
		ft, _, _ := strings.Cut(f, "\r\n")
		if ns != nf || st != ft {
			t.Errorf("%q:\n net/http: %d answers, %q\n fast:     %d answers, %q\n fast body: %q", req, ns, st, nf, ft, f[strings.LastIndex(f, "\r\n\r\n")+4:])
		}
	}
}
