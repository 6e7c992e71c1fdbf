package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/secrets"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips: no binaries to build
	}
	dir, err := os.MkdirTemp("", "rackplane-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// nats-server too, from the module's own dependency: the cluster test
	// kills one with SIGKILL, which an embedded server cannot be.
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/rackplane/rackplane/cmd/...", "github.com/nats-io/nats-server/v2")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	binDir = dir
	// Every regiond of the run seals with this key, so two on one
	// database read each other's secrets.
	if err := os.WriteFile(filepath.Join(dir, "secrets.key"), secrets.GenerateKey(), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	builds.remove()
	os.RemoveAll(dir)
	os.Exit(code)
}

// endToEnd skips t under -short: every test here builds and runs the
// binaries, and some boot QEMU VMs, drive Chromium or run Node.js. They are
// not part of the quick set (go test -short); CI runs them, and a machine
// without what one needs fails it.
func endToEnd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
}

// vmTest is endToEnd for a test that boots VMs on a network, NATS,
// database and ports of its own: it runs in parallel with the others
// like it, which the VM slots (pxetest.QEMU, one per CPU) keep to as
// many VMs at once as the machine has CPUs. Run one after the other,
// each left a core idle while its one VM booted.
func vmTest(t *testing.T) {
	t.Helper()
	endToEnd(t)
	t.Parallel()
}

// proc is a running binary whose output is kept for failure messages.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = append(os.Environ(), "RACKPLANE_LOG_LEVEL=debug", "RACKPLANE_SECRETS_KEY_FILE="+filepath.Join(binDir, "secrets.key"))
	return startCmd(t, name, cmd)
}

// startCmd starts cmd, killed at cleanup; its output is logged when t
// failed.
func startCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{}), cmd: cmd}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("output of %s %v:\n%s", name, cmd.Args[1:], tail(p.Output(), 60))
		}
	})
	return p
}

// Kill sends SIGKILL and waits.
func (p *proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGINT and waits for a clean exit.
func (p *proc) Stop() error { return p.StopWith(os.Interrupt) }

// StopWith sends sig and waits for a clean exit.
func (p *proc) StopWith(sig os.Signal) error {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(15 * time.Second):
		p.Kill()
		return fmt.Errorf("%s did not stop within 15s of %v", p.name, sig)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < timeout {
		if err = f(); err == nil {
			return time.Since(start)
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, timeout, err)
	return 0
}

// token creates an API token with regiond's CLI.
func token(t *testing.T, dbURL string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "regiond"), "-database-url", dbURL, "token", "create", "e2e", "e2e").Output()
	if err != nil {
		t.Fatalf("regiond token create: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func racks(ctx context.Context, api, token string) ([]rackplane.Rack, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", api+"/api/v1/racks", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Racks []rackplane.Rack `json:"racks"`
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET racks: %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	return out.Racks, err
}

func rackByName(rs []rackplane.Rack, name string) (rackplane.Rack, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return rackplane.Rack{}, false
}
