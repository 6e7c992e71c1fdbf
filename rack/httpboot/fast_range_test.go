package httpboot_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
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
