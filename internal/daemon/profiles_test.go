package daemon_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/daemon"
)

// TestProfilesServed: with -pprof-addr the admin listener serves the
// goroutine profile, and nothing else, until it is stopped.
func TestProfilesServed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stop, err := daemon.Profiles{Addr: "127.0.0.1:0"}.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "goroutine profile: total ") || !strings.Contains(string(b), "TestProfilesServed") {
		t.Fatalf("goroutine profile: %d %.200q", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the pprof listener: %d, want 404", resp.StatusCode)
	}
	stop()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the pprof listener still accepts after stop")
	}
	// Off by default.
	addr, stop, err = daemon.Profiles{}.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil || addr != "" {
		t.Fatalf("no -pprof-addr: %q %v", addr, err)
	}
	stop()
}

// TestProfilesRefuseRemoteAddress: an address other machines reach is
// refused with what to do, unless -pprof-allow-remote; loopback ones
// are taken.
func TestProfilesRefuseRemoteAddress(t *testing.T) {
	for _, addr := range []string{":6060", "0.0.0.0:6060", "[::]:6060", "10.1.2.3:6060", "rack1.example:6060"} {
		err := daemon.Profiles{Addr: addr}.Validate()
		if err == nil || !strings.Contains(err.Error(), "-pprof-addr \""+addr+"\" is not a loopback address") ||
			!strings.Contains(err.Error(), "-pprof-allow-remote") || !strings.Contains(err.Error(), "127.0.0.1:<port>") {
			t.Errorf("%s: %v", addr, err)
		}
		if _, _, err := (daemon.Profiles{Addr: addr}).Start(context.Background(), slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: started", addr)
		}
		if err := (daemon.Profiles{Addr: addr, AllowRemote: true}).Validate(); err != nil {
			t.Errorf("%s with -pprof-allow-remote: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "127.0.0.1:6060", "127.0.0.2:0", "[::1]:6060", "localhost:6060"} {
		if err := (daemon.Profiles{Addr: addr}).Validate(); err != nil {
			t.Errorf("%q: %v", addr, err)
		}
	}
	if err := (daemon.Profiles{Addr: "6060"}).Validate(); err == nil || !strings.Contains(err.Error(), "want host:port") {
		t.Errorf("no port: %v", err)
	}
}
