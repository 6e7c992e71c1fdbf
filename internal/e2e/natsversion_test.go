package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestOldNATSServerIsRefused runs regiond and rackd against Debian's
// nats-server 2.9, whose JetStream lacks consumers with several filter
// subjects: both stop at start with an error naming the version found and
// the one needed, instead of running with a rack that never learns the
// region's boot decisions.
func TestOldNATSServerIsRefused(t *testing.T) {
	endToEnd(t)
	bin := netnstest.Need(t, "nats-server", "nats-server")
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("nats-server --version: %v: %s", err, out)
	}
	found := strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server: v")
	if !strings.HasPrefix(found, "2.9.") {
		t.Fatalf("the Debian package nats-server is %q: this test needs the 2.9 series Debian 12 ships", found)
	}
	port := natsserver.FreePorts(t, 1)[0]
	server := startCmd(t, "nats-server", exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(port), "-sd", t.TempDir()))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	eventually(t, 10*time.Second, "nats-server 2.9 listening", func() error {
		if !strings.Contains(server.Output(), "Server is ready") {
			return fmt.Errorf("not ready")
		}
		return nil
	})

	tests := []struct {
		name string
		args []string
	}{
		{"regiond", []string{"-no-nats-callout", "-nats-url", url, "-database-url", pgtest.NewDatabase(t), "-http-addr", freeAddr(t)}},
		{"rackd", []string{"-insecure-nats", "-nats-url", url, "-data-dir", filepath.Join(t.TempDir(), "r1"), "-name", "r1",
			"-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-import-system-bootloaders=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.name, tt.args...)
			exitsSaying(t, p, fmt.Sprintf("runs version %s; Rackplane needs %s or later", found, eventbus.MinServerVersion))
		})
	}
}

// exitsSaying waits for p to exit, and fails t unless it exited with an
// error and said want.
func exitsSaying(t *testing.T, p *proc, want string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still running after 30s:\n%s", p.name, tail(p.Output(), 20))
	}
	if p.err == nil || !strings.Contains(p.Output(), want) {
		t.Fatalf("%s exited with %v, its output without %q:\n%s", p.name, p.err, want, tail(p.Output(), 20))
	}
}
