package httpboot_test

import (
	"io"
	"net"
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
