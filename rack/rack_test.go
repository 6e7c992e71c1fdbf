package rack_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
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
	ns := natsserver.StartTest(t)
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.NATSURL = t.TempDir(), "boot-rack", ns.URL
	cfg.HTTPAddr, cfg.TFTPAddrs = "127.0.0.1:0", []string{"127.0.0.1:0"}
	cfg.ImportSystemBootloaders = true
	r, err := rack.New(cfg, ns.Connect(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

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

// TestIdentityAndInfo: a rack keeps its id across restarts, and answers
// the info rpc on its own subject and on the every-rack subject.
func TestIdentityAndInfo(t *testing.T) {
	ns := natsserver.StartTest(t)
	dir := t.TempDir()
	run := func() (*rack.Rack, func()) {
		cfg := rack.DefaultConfig()
		cfg.DataDir, cfg.Name, cfg.NATSURL = dir, "info-rack", ns.URL
		cfg.HTTPAddr, cfg.TFTPAddrs, cfg.ImportSystemBootloaders = "127.0.0.1:0", nil, false
		r, err := rack.New(cfg, ns.Connect(), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = r.Run(ctx); close(done) }()
		return r, func() { cancel(); <-done }
	}
	r, stop := run()
	nc := ns.Connect()
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
	gctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g, err := rpc.Gather(gctx, nc, events.RacksRPCSubject("info"), struct{}{}, []string{r.ID()})
	if err != nil || !g.Complete {
		t.Fatalf("every-rack info: %+v %v", g, err)
	}
	first := r.ID()
	stop()
	r2, stop2 := run()
	defer stop2()
	if r2.ID() != first {
		t.Fatalf("restarted rack has id %s, want %s", r2.ID(), first)
	}
}
