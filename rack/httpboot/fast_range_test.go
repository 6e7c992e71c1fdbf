package httpboot_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/httpboot"
)

// TestFastPathTwoRangeHeaders: "Range:" (empty) then "Range: bytes=0-0"
// is answered as net/http answers it (its Header.Get gives "", so
// ServeContent answers 200 whole), by the fast path too.
func TestFastPathTwoRangeHeaders(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	tr.WriteFile(t, "initrd", 1000)
	addr := start(t, tr.Resolver)
	get := func(req string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		line, _, _ := strings.Cut(string(b), "\r\n")
		return line
	}
	// Fast path (taken) vs net/http path (a %-escape makes it net/http's).
	fast := get("GET /initrd HTTP/1.1\r\nHost: x\r\nRange:\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n")
	slow := get("GET /%69nitrd HTTP/1.1\r\nHost: x\r\nRange:\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n")
	if fast != slow {
		t.Errorf("fast path %q, net/http path %q", fast, slow)
	}
}

// TestRangesAsCurlSeesThem: curl, one keep-alive connection for all its
// requests, gets what RFC 9110 says of each range of a file the fast path
// answers: 206 with its Content-Range and bytes, 200 whole without one,
// 416 with "bytes */size" for one past the end, and for HEAD the same
// head without a body.
func TestRangesAsCurlSeesThem(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	const size = 200_000
	content := tr.WriteFile(t, "initrd", size)
	url := "http://" + start(t, tr.Resolver) + "/initrd"
	tests := []struct {
		args         []string // curl's, besides the URL
		status       string
		contentRange string
		body         []byte // nil: none
	}{
		{[]string{"-r", "100-199"}, "206", "bytes 100-199/200000", content[100:200]},
		{[]string{"-r", "0-0"}, "206", "bytes 0-0/200000", content[:1]},
		{[]string{"-r", "199990-"}, "206", "bytes 199990-199999/200000", content[199990:]},
		// A body after the head of a HEAD would be read as the next answer.
		{[]string{"-I", "-r", "10-19"}, "206", "bytes 10-19/200000", nil},
		{[]string{"-r", "-500"}, "206", "bytes 199500-199999/200000", content[199500:]},
		{[]string{"-r", "150000-999999"}, "206", "bytes 150000-199999/200000", content[150000:]},
		{[]string{}, "200", "", content},
		{[]string{"-r", "200000-"}, "416", "bytes */200000", nil},
		{[]string{"-r", "0-9"}, "206", "bytes 0-9/200000", content[:10]},
	}
	dir := t.TempDir()
	args := []string{"-s", "--http1.1"}
	for i, tt := range tests {
		if i > 0 {
			args = append(args, "--next")
		}
		args = append(args, tt.args...)
		args = append(args, "-D", filepath.Join(dir, fmt.Sprint(i, ".head")), "-o", filepath.Join(dir, fmt.Sprint(i, ".body")),
			"-w", `%{http_code} %{num_connects}\n`, url)
	}
	out, err := exec.Command(curl, args...).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(tests) {
		t.Fatalf("curl printed %q", out)
	}
	connects := 0
	for i, tt := range tests {
		var status string
		var n int
		fmt.Sscan(lines[i], &status, &n)
		connects += n
		head, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(i, ".head")))
		// (For HEAD, curl writes the head there.)
		body, _ := os.ReadFile(filepath.Join(dir, fmt.Sprint(i, ".body")))
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
		if err != nil {
			t.Fatalf("%v: head %q: %v", tt.args, head, err)
		}
		if status != tt.status || resp.Header.Get("Content-Range") != tt.contentRange {
			t.Errorf("%v: %s, Content-Range %q; want %s, %q", tt.args, status, resp.Header.Get("Content-Range"), tt.status, tt.contentRange)
		}
		if tt.body != nil && (!bytes.Equal(body, tt.body) || resp.Header.Get("Content-Length") != fmt.Sprint(len(tt.body))) {
			t.Errorf("%v: %d bytes (Content-Length %s), want %d", tt.args, len(body), resp.Header.Get("Content-Length"), len(tt.body))
		}
		if tt.body == nil && tt.status == "206" && resp.Header.Get("Content-Length") != "10" {
			t.Errorf("%v: Content-Length %s, want 10", tt.args, resp.Header.Get("Content-Length"))
		}
	}
	// One connection for all: each answer ended where its length said.
	if connects != 1 {
		t.Errorf("curl connected %d times, want once", connects)
	}
}

// TestFastPathWriteTimeout: a client that stops reading a file is cut off
// once the write timeout passes with nothing taken (the transfer is
// reported failed and the connection closed short), and one that keeps
// reading, however long the whole takes, is not.
func TestFastPathWriteTimeout(t *testing.T) {
	tr := handofftest.Build(t, handofftest.Decisions{}, bootconfig.RenderConfig{})
	// Several times what the socket buffers hold.
	const size = 24 << 20
	content := tr.WriteFile(t, "initrd", size)
	cfg := httpserver.DefaultConfig()
	const timeout = 4 * time.Second
	cfg.WriteTimeout = timeout
	srv, err := httpboot.NewServer(httpboot.Config{Addresses: []string{"127.0.0.1:0"}, HTTP: cfg}, tr.Resolver, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	addr := srv.Addrs()[0].String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// Small buffers, so that the file is far from fitting in them.
		c.(*net.TCPConn).SetReadBuffer(64 << 10)
		io.WriteString(c, "GET /initrd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		return c
	}

	// Reading 256 KiB every 20 ms: seconds for the whole file, a
	// writeChunk many times over within each write timeout. It returns
	// the body read and the longest the reader went between two reads.
	steady := func() ([]byte, time.Duration) {
		c := dial()
		defer c.Close()
		var got bytes.Buffer
		buf := make([]byte, 256<<10)
		var gap time.Duration
		last := time.Now()
		for {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			start := time.Now()
			gap = max(gap, start.Sub(last))
			n, err := io.ReadFull(c, buf)
			last = time.Now()
			got.Write(buf[:n])
			if err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, body, _ := bytes.Cut(got.Bytes(), []byte("\r\n\r\n"))
		return body, gap
	}
	// A reader starved of CPU (the race detector, the whole suite on two
	// cores) has gone 2 s between two 20 ms sleeps: one that did not read
	// for half the timeout proves nothing when cut off, and reads again.
	for attempt := 1; ; attempt++ {
		body, gap := steady()
		if bytes.Equal(body, content) {
			break
		}
		if gap < timeout/2 {
			t.Fatalf("a steady reader, never more than %v between reads, got %d bytes of %d", gap.Round(time.Millisecond), len(body), size)
		}
		if attempt == 3 {
			t.Fatalf("the reader was starved in each of %d attempts (%v between reads in the last): the machine is too busy for this test", attempt, gap.Round(time.Millisecond))
		}
		t.Logf("attempt %d: the reader went %v between reads and got %d bytes of %d; reading again", attempt, gap.Round(time.Millisecond), len(body), size)
	}

	// Not reading at all: the transfer fails, and what the client then
	// reads ends short.
	after := len(tr.Recorder.Events(events.TypeBootTransfer))
	stalled := dial()
	defer stalled.Close()
	if _, ok := tr.Recorder.Wait(events.TypeBootTransfer, after, 30*time.Second, func(e events.Event) bool {
		var d events.BootTransfer
		return e.DecodeData(&d) == nil && d.Error != ""
	}); !ok {
		t.Fatal("a stalled transfer was not cut off")
	}
	stalled.SetReadDeadline(time.Now().Add(30 * time.Second))
	all, _ := io.ReadAll(stalled)
	if _, body, _ := bytes.Cut(all, []byte("\r\n\r\n")); len(body) >= size {
		t.Fatalf("the stalled client got the whole file")
	}
}
