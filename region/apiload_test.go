package region_test

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLeanClient: the API benchmark's own HTTP client sends the token,
// reads bodies of either framing to their last byte (so that the next
// response on the kept-alive connection reads right), keeps one
// connection, and fails on a status other than 200.
func TestLeanClient(t *testing.T) {
	var conns atomic.Int32
	body := strings.Repeat("x", 40000)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/fixed":
			w.Header().Set("Content-Length", "40000")
			w.Write([]byte(body))
		case "/chunked":
			for i := 0; i < 4; i++ {
				w.Write([]byte(body[:10000]))
				w.(http.Flusher).Flush()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	get, done := leanClient(loadSpec{API: srv.URL, Token: "tok"})
	defer done()
	for _, p := range []string{"/fixed", "/chunked", "/chunked", "/fixed", "/fixed?after=x"} {
		if err := get([]byte(p)); err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 kept alive", n)
	}
	if err := get([]byte("/nope")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("GET /nope: %v, want status 404", err)
	}
	if err := get([]byte("/fixed")); err != nil {
		t.Errorf("GET /fixed after a 404: %v", err)
	}
	bad, done2 := leanClient(loadSpec{API: srv.URL, Token: "other"})
	defer done2()
	if err := bad([]byte("/fixed")); err == nil {
		t.Error("a refused token passed")
	}
}

// TestReadResponse: the body's length counts every chunk, the trailer is
// read, and Connection: close is heard.
func TestReadResponse(t *testing.T) {
	raw := "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
		"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nHTTP/1.1 ..."
	r := bufio.NewReader(strings.NewReader(raw))
	status, size, keep, err := readResponse(r, make([]byte, 4))
	if err != nil || status != 200 || size != 11 || keep {
		t.Fatalf("status %d size %d keep %v err %v", status, size, keep, err)
	}
	if rest, _ := r.ReadString(0); rest != "HTTP/1.1 ..." {
		t.Fatalf("left %q", rest)
	}
	for _, bad := range []string{"HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"} {
		if _, _, _, err := readResponse(bufio.NewReader(strings.NewReader(bad)), make([]byte, 4)); err == nil {
			t.Errorf("%q read as a response", bad)
		}
	}
}
