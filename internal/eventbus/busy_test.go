package eventbus_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestPublishDoesNotWaitOnTheJournalsDisk: while the journal's Ack waits
// on the disk (the file of its mark is a FIFO nobody reads, so opening it
// blocks), Publish and a scrape of the buffered events return, and what
// was published goes out once the disk answers.
func TestPublishDoesNotWaitOnTheJournalsDisk(t *testing.T) {
	_, js := startStreams(t)
	rack, dir := uuid.NewString(), t.TempDir()
	fifo := filepath.Join(dir, "acked.tmp")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startJournalled(t, js, rack, dir, 0, 0)
	released := false
	release := func() { // lets the Ack open and write the FIFO
		if released {
			return
		}
		released = true
		r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { r.Close() })
	}
	t.Cleanup(release) // before the publisher's stop, which waits for the Ack

	p.pub.Publish(rackEvent(t, rack, 0))
	waitOpeningFIFO(t) // the Ack of event 0, sent and acknowledged by JetStream

	done := make(chan int, 1)
	go func() {
		p.pub.Publish(rackEvent(t, rack, 1))
		done <- p.pub.Buffered()
	}()
	select {
	case n := <-done:
		if n != 1 {
			t.Errorf("Buffered = %d while the Ack of event 0 waits, want 1 (event 1)", n)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Publish or Buffered still waiting after 30s for the journal's Ack, blocked on the disk")
	}
	if !openingFIFO() {
		t.Fatal("the Ack no longer waits: the test did not test Publish during it")
	}
	release()
	flush(t, p.pub)
	if seen, _ := streamContents(t, js); len(seen) != 2 {
		t.Errorf("%d events in the stream, want 2", len(seen))
	}
}

// openingFIFO says whether a thread of this process waits in the kernel to
// open a FIFO (for the other end to be opened).
func openingFIFO() bool {
	tasks, _ := filepath.Glob("/proc/self/task/*/wchan")
	for _, w := range tasks {
		if b, err := os.ReadFile(w); err == nil && strings.TrimSpace(string(b)) == "wait_for_partner" {
			return true
		}
	}
	return false
}

func waitOpeningFIFO(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !openingFIFO(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no thread waiting to open a FIFO after 30s (is /proc/self/task/*/wchan readable?)")
		}
	}
}
