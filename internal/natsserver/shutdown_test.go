package natsserver

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// logSeen is a log that notes a line containing want.
type logSeen struct {
	want []byte
	seen atomic.Bool
}

func (l *logSeen) Write(p []byte) (int, error) {
	if bytes.Contains(p, l.want) {
		l.seen.Store(true)
	}
	return len(p), nil
}

// TestShutdownDuringARestart: Shutdown while a restart waits for the
// store to be writable again ends the restart: once the store is back, no
// server is started behind Shutdown's back, and Run returns.
func TestShutdownDuringARestart(t *testing.T) {
	store := filepath.Join(t.TempDir(), "nats")
	logged := &logSeen{want: []byte("store still not writable")}
	sv, err := StartSupervised(Config{Port: -1, StoreDir: store}, slog.New(slog.NewTextHandler(logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Shutdown)
	addr := sv.Server().Addr().String()
	// A file where the store's directory was: the restart's probe fails.
	if err := os.Rename(store, store+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	sv.critical <- "Critical write error (as the store's sync logs it)"
	for deadline := time.Now().Add(30 * time.Second); !logged.seen.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no restart waiting for the store after 30s")
		}
	}

	sv.Shutdown()
	// The store is writable again: a restart still going would start now.
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(store+".away", store); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run still going 30s after Shutdown")
	}
	if n := sv.Restarts(); n != 0 {
		t.Errorf("%d restarts after Shutdown, want 0", n)
	}
	if sv.Server().Running() {
		t.Error("a server runs after Shutdown")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("a server listens on %s after Shutdown", addr)
	}
}
