package natsserver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/region/regiontest"
)

// criticalSeen is a log that notes nats-server's critical write error,
// and keeps the log's last lines for a failure's message (the test failed
// once, under the load of -count=3 with every package at once, with no
// critical write error logged within 10s; it did not fail again in 27
// runs, so the next failure must say what the server did instead).
type criticalSeen struct {
	seen atomic.Bool
	mu   sync.Mutex
	tail [][]byte
}

func (c *criticalSeen) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("Critical write error")) {
		c.seen.Store(true)
	}
	c.mu.Lock()
	c.tail = append(c.tail, bytes.Clone(p))
	if len(c.tail) > 40 {
		c.tail = c.tail[1:]
	}
	c.mu.Unlock()
	return len(p), nil
}

func (c *criticalSeen) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(bytes.Join(c.tail, nil))
}

// TestSupervisedServerOutlivesDescriptorExhaustion: the process runs out
// of file descriptors for a moment while a stream has unsynced messages.
// nats-server keeps the EMFILE of its periodic sync as a critical write
// error and refuses every later message on that stream, descriptors free
// or not; the supervised server is started again once the store can be
// written, and the stream takes messages again.
func TestSupervisedServerOutlivesDescriptorExhaustion(t *testing.T) {
	var logged criticalSeen
	sv, err := natsserver.StartSupervised(natsserver.Config{Port: -1, StoreDir: t.TempDir(), SyncInterval: 100 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sv.Shutdown)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the server's last log lines:\n%s", &logged)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	nc, err := nats.Connect(sv.Server().ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	publish := func() error {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := js.Publish(pctx, "s.x", []byte("x"))
		return err
	}
	if err := publish(); err != nil {
		t.Fatal(err)
	}

	exhaust(t, func() {
		// A message waiting for the sync, which now cannot open index.db.
		_ = publish()
		regiontest.Eventually(t, 10*time.Second, "the critical write error logged", func() error {
			if !logged.seen.Load() {
				return errors.New("not logged")
			}
			return nil
		})
	})
	regiontest.Eventually(t, 30*time.Second, "the stream taking messages again", publish)
	if n := sv.Restarts(); n != 1 {
		t.Errorf("%d restarts, want 1", n)
	}
}

// exhaust runs f while this process can open no more files, and frees
// them after. A descriptor closed meanwhile (an earlier test's file
// closed late, by its finalizer or its server's shutdown) is taken again
// at once: else the server's sync, which opens and closes its file every
// SyncInterval, could keep getting that one free descriptor, and never
// fail.
func exhaust(t *testing.T, f func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []*os.File
	grab := func() {
		for range low.Cur {
			f, err := os.Open(os.DevNull)
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, f)
			mu.Unlock()
		}
	}
	grab()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				grab()
			}
		}
	}()
	defer func() {
		close(stop)
		<-stopped
		for _, f := range held {
			f.Close()
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
			t.Error(err)
		}
	}()
	f()
}
