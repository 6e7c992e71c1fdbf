package rack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack"
)

// TestBootloadersByBareName imports the machine's own bootloader packages
// into a rack and fetches them the way firmware and pxelinux ask for them,
// by bare name, over TFTP with curl: the bytes are the packages' files.
// It needs the packages of .ci/packages, so it is not in the quick set.
func TestBootloadersByBareName(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the bootloader packages of .ci/packages: skipped with -short")
	}
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.TFTPAddrs = t.TempDir(), "boot-rack", []string{"127.0.0.1:0"}
	cfg.ImportSystemBootloaders = true
	ns := natsserver.StartTest(t)
	ensureStreams(t, ns.Connect())
	r, stop := runRack(t, ns, cfg)
	t.Cleanup(stop)

	tests := []struct{ name, file, pkg string }{
		{"pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux"},
		{"ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common"},
	}
	addr := r.TFTPAddrs()[0]
	for _, tt := range tests {
		want, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatalf("%s missing: install Debian package %s", tt.file, tt.pkg)
		}
		var got []byte
		deadline := time.Now().Add(15 * time.Second)
		for {
			out := filepath.Join(t.TempDir(), tt.name)
			err := exec.Command("curl", "-sS", "-o", out, "tftp://"+addr+"/"+tt.name).Run()
			got, _ = os.ReadFile(out)
			if err == nil && bytes.Equal(got, want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond) // the import runs in the background
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s over TFTP: %d bytes, want the %d of %s", tt.name, len(got), len(want), tt.file)
		}
	}
	if err := exec.Command("curl", "-sS", "-o", os.DevNull, "tftp://"+addr+"/no-such-loader.0").Run(); err == nil {
		t.Fatal("an unknown bare name was served")
	}
}

// runRack runs a rack with cfg, on ns and an HTTP port of its own, until
// the returned stop.
func runRack(t *testing.T, ns *natsserver.Test, cfg rack.Config) (*rack.Rack, func()) {
	t.Helper()
	cfg.HTTPAddr = "127.0.0.1:0"
	r, err := rack.New(context.Background(), cfg, ns.Connect(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	return r, func() { cancel(); <-done }
}

// infoRack runs a rack without TFTP or bootloaders in dir until the
// returned stop.
func infoRack(t *testing.T, ns *natsserver.Test, dir string) (*rack.Rack, func()) {
	t.Helper()
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.TFTPAddrs, cfg.ImportSystemBootloaders = dir, "info-rack", nil, false
	return runRack(t, ns, cfg)
}

// ensureStreams makes the JetStream streams, as a region does.
func ensureStreams(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(context.Background(), js, time.Hour); err != nil {
		t.Fatal(err)
	}
	return js
}

// TestIdentityAndInfo: a rack keeps its id across restarts, and answers
// the info rpc on its own subject and on the every-rack subject.
func TestIdentityAndInfo(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	// With the streams there, the rack's events leave at once and a stop
	// does not wait for them.
	ensureStreams(t, nc)
	dir := t.TempDir()
	r, stop := infoRack(t, ns, dir)
	var info rack.Info
	var err error
	for i := 0; i < 50; i++ {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = rpc.Call(cctx, nc, events.RackRPCSubject(r.ID(), "info"), struct{}{}, &info)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || info.ID != r.ID() || info.Name != "info-rack" {
		t.Fatalf("info: %+v %v", info, err)
	}
	first := r.ID()
	stop()
	r2, stop2 := infoRack(t, ns, dir)
	defer stop2()
	if r2.ID() != first {
		t.Fatalf("restarted rack has id %s, want %s", r2.ID(), first)
	}
}

// TestQueuedEventsLeaveOnStop: events the rack could not publish yet go
// out when it stops cleanly, if they can within its grace period: here
// the streams appear only as the rack is told to stop.
func TestQueuedEventsLeaveOnStop(t *testing.T) {
	ns := natsserver.StartTest(t)
	r, stop := infoRack(t, ns, t.TempDir())
	for deadline := time.Now().Add(5 * time.Second); r.Publisher().Buffered() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the rack queued no event")
		}
	}
	js := ensureStreams(t, ns.Connect())
	stop()
	stream, err := js.Stream(context.Background(), events.RackStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.GetLastMsgForSubject(context.Background(), events.RackEventSubject(r.ID(), events.TypeRackRegistered)); err != nil {
		t.Fatalf("the rack's registration, queued when it stopped: %v", err)
	}
}

// TestFailedNewReleasesWhatItTook: a New that fails half way (an address
// taken, a data directory it cannot use) says why, and leaves none of the
// addresses it had bound, nor any other file, open: the next start on the
// same addresses and data directory works.
func TestFailedNewReleasesWhatItTook(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer takenTCP.Close()

	tests := []struct {
		name   string
		set    func(cfg *rack.Config)
		break_ string // a file in the data dir where New wants a directory
		want   []string
	}{
		{"second TFTP address taken", func(cfg *rack.Config) {
			cfg.TFTPAddrs = append(cfg.TFTPAddrs, taken.LocalAddr().String())
		}, "", []string{"tftp", taken.LocalAddr().String(), "address already in use"}},
		{"HTTP address taken", func(cfg *rack.Config) { cfg.HTTPAddr = takenTCP.Addr().String() },
			"", []string{takenTCP.Addr().String(), "address already in use"}},
		{"image store directory is a file", func(*rack.Config) {}, "images", []string{"image store", "not a directory"}},
		{"hand-off directory is a file, after the TFTP server bound", func(*rack.Config) {}, "handoff",
			[]string{"hand-off store", "not a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := rack.DefaultConfig()
			cfg.DataDir, cfg.Name, cfg.ImportSystemBootloaders = t.TempDir(), "failing-rack", false
			cfg.HTTPAddr, cfg.TFTPAddrs = freeAddr(t, "tcp"), []string{freeAddr(t, "udp")}
			good := cfg
			tt.set(&cfg)
			if tt.break_ != "" {
				if err := os.WriteFile(filepath.Join(cfg.DataDir, tt.break_), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			fds := openFiles(t)
			r, err := rack.New(context.Background(), cfg, nc, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				r.Run(canceled())
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if now := openFiles(t); now != fds {
				t.Errorf("%d files open after the failed New, %d before", now, fds)
			}
			if tt.break_ != "" {
				os.Remove(filepath.Join(cfg.DataDir, tt.break_))
			}
			r, err = rack.New(context.Background(), good, nc, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatalf("New on the same addresses and data directory after the failed one: %v", err)
			}
			if err := r.Run(canceled()); err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

// freeAddr returns a loopback address of network with a port nobody uses
// now.
func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("cannot count open files: %v", err)
	}
	return len(des)
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
