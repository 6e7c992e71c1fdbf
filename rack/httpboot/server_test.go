package httpboot_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/httpboot"
)

func start(t testing.TB, resolver *handoff.Resolver) string {
	t.Helper()
	srv, err := httpboot.NewServer(httpboot.Config{Addresses: []string{"127.0.0.1:0"}}, resolver, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	return srv.Addrs()[0].String()
}

var decision = events.BootDecision{MAC: "52:54:00:12:34:56", MachineID: "m-1", Purpose: events.BootPurposeInstall,
	Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", Params: []string{"token=x-525400123456"}}

func TestServe(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{decision.MAC: decision}, bootconfig.RenderConfig{})
	big := tr.WriteFile(t, "big.bin", 5<<20+7)
	addr := start(t, tr.Resolver)
	base := "http://" + addr

	get := func(path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	resp, body := get("/big.bin", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, big) || resp.ContentLength != int64(len(big)) {
		t.Fatalf("full GET: %d, %d bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	tag := resp.Header.Get("ETag")
	if tag == "" {
		t.Fatal("no ETag")
	}
	resp, body = get("/big.bin", map[string]string{"Range": "bytes=1000-1999"})
	if resp.StatusCode != 206 || !bytes.Equal(body, big[1000:2000]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(big)) {
		t.Fatalf("range GET: %d %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	resp, body = get("/big.bin", map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(big)-10)})
	if resp.StatusCode != 206 || !bytes.Equal(body, big[len(big)-10:]) {
		t.Fatalf("suffix range GET: %d", resp.StatusCode)
	}
	resp, _ = get("/big.bin", map[string]string{"If-None-Match": tag})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET: %d", resp.StatusCode)
	}
	resp, body = get("/ipxe/52-54-00-12-34-56.ipxe", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "token=x-525400123456") || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("config: %d %s", resp.StatusCode, body)
	}
	resp, body = get("/images/debian/v1/linux", nil)
	if resp.StatusCode != 200 || string(body) != "versioned kernel v1\n" {
		t.Fatalf("versioned: %d %s", resp.StatusCode, body)
	}
	hr, err := http.Head(base + "/big.bin")
	if err != nil || hr.StatusCode != 200 || hr.ContentLength != int64(len(big)) {
		t.Fatalf("HEAD: %v %v", hr, err)
	}
	pr, err := http.Post(base+"/big.bin", "text/plain", strings.NewReader("x"))
	if err != nil || pr.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %v %v", pr, err)
	}
	if _, ok := tr.Recorder.Wait(events.TypeBootRequestRejected, 0, time.Second, func(e events.Event) bool { return true }); !ok {
		t.Error("no event for the POST")
	}
	if _, ok := tr.Recorder.Wait(events.TypeBootTransfer, 0, time.Second, func(e events.Event) bool {
		var d events.BootTransfer
		return e.DecodeData(&d) == nil && d.Protocol == "http" && d.Bytes == int64(len(big)) && d.Error == ""
	}); !ok {
		t.Error("no transfer event for the full GET")
	}
}

// TestHostilePaths sends raw request lines, which no HTTP client would
// clean up first.
func TestHostilePaths(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	addr := start(t, tr.Resolver)
	tests := []struct {
		path   string
		status int
	}{
		{"/../../etc/passwd", 403},
		{"/%2e%2e/%2e%2e/secret", 403},
		{"/..%5c..%5csecret", 403},
		{"/escape", 403},
		{"/sub/escape-rel", 403},
		{"/pxelinux.0%00.txt", 400}, // refused before the hand-off: no file name has a NUL
		{"/pxelinux.0%FF", 400},
		{"/" + strings.Repeat("a", 2000), 403},
		{"/fifo", 404},
		{"/etc/passwd", 404},
		{"/pxelinux.0", 200},
	}
	for _, tt := range tests {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", tt.path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != tt.status || strings.Contains(string(b), "secret outside") {
			t.Errorf("%s: %d %q, want %d", tt.path, resp.StatusCode, b, tt.status)
		}
	}
	handedOff := 0
	for _, tt := range tests {
		if tt.status != 400 {
			handedOff++
		}
	}
	if n := len(tr.Recorder.Events(events.TypeBootHandoff)); n != handedOff {
		t.Errorf("%d hand-off events for %d requests with a path that may name a file", n, handedOff)
	}
}

// TestRunIsBounded: a boot HTTP server of its own (Run) keeps its
// connection limit, shedding the connections idle longest, and serves a
// boot file whole to a new client under a flood of idle ones.
func TestRunIsBounded(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	kernel := tr.WriteFile(t, "vmlinuz", 3<<20)
	cfg := httpboot.Config{Addresses: []string{"127.0.0.1:0"}, HTTP: httpserver.DefaultConfig()}
	cfg.HTTP.MaxConns = 64
	reg := prometheus.NewRegistry()
	srv, err := httpboot.NewServer(cfg, tr.Resolver, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	addr := srv.Addrs()[0].String()
	flood := httpservertest.Idle(t, addr, 2000, "")
	defer flood.Stop()
	status, body, err := httpservertest.Get("http://"+addr+"/vmlinuz", nil)
	if status != 200 || !bytes.Equal([]byte(body), kernel) {
		t.Fatalf("boot file under a flood: %d, %d bytes, %v", status, len(body), err)
	}
	labels := map[string]string{"server": "httpboot"}
	if open := metrictest.Value(t, reg, "rackplane_http_connections_open", labels); open > 64 {
		t.Errorf("%v connections open, limit 64", open)
	}
	if shed := metrictest.Value(t, reg, "rackplane_http_connections_shed_total", labels); shed < 2000-64 {
		t.Errorf("%v connections shed of 2,000", shed)
	}
}

// TestLogsBoundAddresses: a server asked for port 0 logs the port it got,
// which is where clients reach it.
func TestLogsBoundAddresses(t *testing.T) {
	var log handofftest.Log
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	srv, err := httpboot.NewServer(httpboot.Config{Addresses: []string{"127.0.0.1:0"}, HTTP: httpserver.DefaultConfig()}, tr.Resolver, log.Logger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	log.Wait(t, `msg="http boot serving"`, "addresses=["+srv.Addrs()[0].String()+"]")
}

// TestRangesAsServeContent: the ranges the server answers itself get what
// http.ServeContent gives for them, and so do those it leaves to it.
func TestRangesAsServeContent(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	const size = 100_000
	content := tr.WriteFile(t, "initrd", size)
	addr := start(t, tr.Resolver)
	ref := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(content))
	}))
	defer ref.Close()
	ranges := []string{"", "bytes=0-0", "bytes=0-99999", "bytes=0-", "bytes=99999-", "bytes=100-199", "bytes=5000-999999",
		"bytes=-1", "bytes=-500", "bytes=-100000", "bytes=-200000", "bytes=-0", "bytes=100000-", "bytes=200-100",
		"bytes=0-1,5-6", "bytes= 1-2", "bytes=1-2 ", "items=0-1", "bytes=", "bytes=-", "bytes=a-b", "bytes=1--2", "bytes=+1-2"}
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, rng := range ranges {
			get := func(base string) (*http.Response, []byte) {
				req, _ := http.NewRequest(method, base+"/initrd", nil)
				if rng != "" {
					req.Header.Set("Range", rng)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, b
			}
			got, gotBody := get("http://" + addr)
			want, wantBody := get(ref.URL)
			for _, k := range []string{"Content-Range", "Content-Length", "Accept-Ranges", "Content-Type"} {
				// A multipart answer's boundary is random.
				g, _, _ := strings.Cut(got.Header.Get(k), ";")
				w, _, _ := strings.Cut(want.Header.Get(k), ";")
				if g != w {
					t.Errorf("%s %q: %s %q, ServeContent gives %q", method, rng, k, got.Header.Get(k), want.Header.Get(k))
				}
			}
			multipart := strings.HasPrefix(want.Header.Get("Content-Type"), "multipart/")
			if got.StatusCode != want.StatusCode || !multipart && !bytes.Equal(gotBody, wantBody) {
				t.Errorf("%s %q: %d, %d bytes; ServeContent gives %d, %d bytes", method, rng, got.StatusCode, len(gotBody), want.StatusCode, len(wantBody))
			}
		}
	}
}
