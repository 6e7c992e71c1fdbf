package region_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/httpserver/httpservertest"
	"github.com/rackplane/rackplane/region"
)

// limitDescriptors sets this process's soft descriptor limit to n until
// the test ends. The region and rack under test share the process, as
// they do in rackplane dev: a flood their connection limits did not hold
// would take the descriptors PostgreSQL, NATS and the test's own client
// need, and the test would fail.
func limitDescriptors(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	was := lim.Cur
	if lim.Max < n {
		// Raising the hard limit takes CAP_SYS_RESOURCE, which CI has (it
		// runs as root); elsewhere the test says what it needs.
		lim.Max = n
	}
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("set the descriptor limit to %d: %v (raise ulimit -Hn to %d)", n, err, n)
	}
	t.Cleanup(func() {
		lim.Cur = was
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}

// scrape reads one sample from a /metrics page: the first line of name
// whose labels include each of labels (name="value", comma separated).
func scrape(t *testing.T, base, name, labels string) float64 {
	t.Helper()
	status, body, err := httpservertest.Get(base+"/metrics", nil)
	if status != 200 {
		t.Fatalf("%s/metrics: %d %v", base, status, err)
	}
	for line := range strings.Lines(body) {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], name+"{") {
			continue
		}
		have := strings.Split(strings.TrimSuffix(strings.TrimPrefix(f[0], name+"{"), "}"), ",")
		if !slices.ContainsFunc(strings.Split(labels, ","), func(l string) bool { return !slices.Contains(have, l) }) {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	t.Fatalf("%s/metrics: no %s{%s}", base, name, labels)
	return 0
}

// floodSize is the idle connections each server gets: 20,000, as the
// security review's flood; -short keeps 4,000.
func floodSize() int {
	if testing.Short() {
		return 4000
	}
	return 20000
}

// TestIdleFloodKeepsServersAnswering opens 20,000 idle connections, half
// of them silent and half after one keep-alive request, to the API and
// then to the rack's HTTP server, in a process that may open 8,192 files:
// the API, /readyz, the rack's /healthz and a boot file over HTTP and over
// TFTP keep answering a new client, because each server keeps at most -http-max-conns (4,096)
// and closes the ones idle longest for new ones.
//
// The servers wait 5 minutes for headers, requests and on idle
// connections here:
// with the defaults (10 s, 60 s) a flood that took a loaded machine a
// minute to open lost some of its oldest connections to those timeouts,
// rightly, and the count of what the limit shed could not be exact.
func TestIdleFloodKeepsServersAnswering(t *testing.T) {
	limitDescriptors(t, 8192)
	long := func(c *httpserver.Config) {
		c.ReadHeaderTimeout, c.ReadTimeout, c.IdleTimeout = 5*time.Minute, 5*time.Minute, 5*time.Minute
	}
	h := startRegionWith(t, func(c *region.Config) { long(&c.HTTP) })
	dir := filepath.Join(t.TempDir(), "rack-a")
	cfg := rackConfig(h, dir, 200*time.Millisecond)
	long(&cfg.HTTP)
	cfg.BootRoot = filepath.Join(dir, "boot-root")
	kernel := bytes.Repeat([]byte("kernel\n"), 3<<20/7)
	if err := os.MkdirAll(cfg.BootRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.BootRoot, "vmlinuz"), kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	r, _ := startRackConfig(t, h, cfg)
	rackURL := "http://" + r.HTTPAddr()
	auth := map[string]string{"Authorization": "Bearer " + h.token}

	answering := func(t *testing.T) {
		t.Helper()
		checks := []struct {
			url    string
			header map[string]string
			want   func(string) bool
		}{
			{h.api + "/readyz", nil, func(b string) bool { return strings.Contains(b, `"ready": true`) }},
			{h.api + "/api/v1/machines", auth, func(b string) bool { return strings.Contains(b, `"machines"`) }},
			{h.api + "/api/v1/racks/" + r.ID(), auth, func(b string) bool { return strings.Contains(b, r.ID()) }},
			{rackURL + "/healthz", nil, func(b string) bool { return strings.Contains(b, r.ID()) }},
			{rackURL + "/vmlinuz", nil, func(b string) bool { return b == string(kernel) }},
		}
		for _, c := range checks {
			status, body, err := httpservertest.Get(c.url, c.header)
			if status != 200 || !c.want(body) {
				t.Errorf("GET %s: %d, %d bytes, %v", c.url, status, len(body), err)
			}
		}
		// TFTP shares the process's descriptors: a transfer takes a
		// socket of its own, which a flood that exhausted them would deny.
		tftpURL := "tftp://" + r.TFTPAddrs()[0] + "/vmlinuz"
		out, err := exec.Command("curl", "-sS", "--max-time", "60", "--tftp-blksize", "1428", tftpURL).Output()
		if err != nil || !bytes.Equal(out, kernel) {
			t.Errorf("curl %s: %v, %d of %d bytes", tftpURL, err, len(out), len(kernel))
		}
	}
	n := floodSize()
	for _, srv := range []struct{ name, base, label, path string }{
		{"api", h.api, `server="api"`, "/healthz"},
		{"rack", rackURL, `server="rack"`, "/healthz"},
	} {
		t.Run(srv.name, func(t *testing.T) {
			addr := strings.TrimPrefix(srv.base, "http://")
			silent := httpservertest.Idle(t, addr, n/2, "")
			kept := httpservertest.Idle(t, addr, n/2, httpservertest.Request(srv.path))
			answering(t)
			// The server accepts what the kernel queued at its own pace:
			// on loaded cores some of the flood is still in the accept
			// queue when the clients are done, neither open nor gone yet.
			// Every other connection is open, or was closed for a newer
			// one (at the limit, or out of descriptors, the process having
			// 8,192), or refused because all open ones were in a handler.
			var open, gone float64
			for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				open = scrape(t, srv.base, "rackplane_http_connections_open", srv.label)
				gone = scrape(t, srv.base, "rackplane_http_connections_shed_total", srv.label+`,reason="limit"`) +
					scrape(t, srv.base, "rackplane_http_connections_shed_total", srv.label+`,reason="fd_limit"`) +
					scrape(t, srv.base, "rackplane_http_connections_refused_total", srv.label)
				if gone >= float64(n-4096) || time.Now().After(end) {
					break
				}
			}
			t.Logf("%d silent (%+v) and %d kept alive (%+v): %v open, %v shed or refused", n/2, silent.Result, n/2, kept.Result, open, gone)
			if silent.Result.Opened+kept.Result.Opened != n {
				t.Errorf("flood opened %d of %d connections", silent.Result.Opened+kept.Result.Opened, n)
			}
			if open > 4096 || gone < float64(n-4096) {
				t.Errorf("%v connections open (at most 4096), %v shed or refused (at least %d)", open, gone, n-4096)
			}
			silent.Stop()
			kept.Stop()
			answering(t)
		})
	}
}

// TestSlowBodiesCannotHoldServers trickles 1,000 request bodies a byte
// every 200 ms into the API (a machine to create, with a token and
// without) and into the rack's installer status endpoint: each is cut at
// the read timeout (3 s here) and answered (408, or 401 for the requests
// without a token, whose bodies net/http reads to reuse the connection),
// and the servers answer other clients meanwhile.
func TestSlowBodiesCannotHoldServers(t *testing.T) {
	h := startRegionWith(t, func(c *region.Config) { c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout = 3*time.Second, 3*time.Second })
	cfg := rackConfig(h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.ReadTimeout = 3*time.Second, 3*time.Second
	r, _ := startRackConfig(t, h, cfg)
	auth := map[string]string{"Authorization": "Bearer " + h.token}
	const createMachine = "POST /api/v1/machines HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n"
	tests := []struct {
		name, base, head string
		answer           int
		after            string // asked, with a token, once the bodies are cut
	}{
		// A JSON string the decoder waits the end of.
		{"api", h.api, createMachine + "Authorization: Bearer " + h.token + "\r\n\r\n" + `{"hostname":"`, 408, "/api/v1/machines"},
		{"api without a token", h.api, createMachine + "\r\n" + `{"hostname":"`, 401, "/api/v1/machines"},
		{"rack", "http://" + r.HTTPAddr(),
			"POST /status/" + uuid.NewString() + "/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000\r\n\r\n",
			408, "/healthz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := scrape(t, tt.base, "rackplane_http_requests_refused_total", `reason="body_timeout"`)
			slow := httpservertest.Slow(t, strings.TrimPrefix(tt.base, "http://"), 1000, tt.head, 200*time.Millisecond)
			status, body, err := httpservertest.Get(tt.base+"/healthz", nil)
			held := slow.Held()
			if status != 200 {
				t.Errorf("fresh client among 1,000 slow bodies: %d %q %v", status, body, err)
			}
			// Cut at 3 s; the bound leaves room for a loaded machine.
			if left := slow.WaitReleased(30 * time.Second); left > 0 {
				t.Fatalf("slow bodies still held after 30 s: %s", slow.Summary())
			}
			t.Logf("1,000 slow bodies: %s; a fresh client was answered while %d were held", slow.Summary(), held)
			if !strings.Contains(slow.Summary(), fmt.Sprintf("1000 answered %d", tt.answer)) {
				t.Errorf("slow bodies: %s, want all answered %d", slow.Summary(), tt.answer)
			}
			if status, body, err := httpservertest.Get(tt.base+tt.after, auth); status != 200 {
				t.Errorf("after the slow bodies: %d %q %v", status, body, err)
			}
			if tt.answer != 408 {
				return
			}
			if n := scrape(t, tt.base, "rackplane_http_requests_refused_total", `reason="body_timeout"`) - before; n != 1000 {
				t.Errorf("%v body timeouts counted, want 1000", n)
			}
		})
	}
}
