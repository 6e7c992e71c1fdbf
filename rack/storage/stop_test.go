package storage

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
)

// TestStoppingWaitsAndRefuses: when the rack stops, Run waits for the
// actions under way, and one asked while it stops (an rpc in flight) is
// refused as unavailable and runs nothing. Requests keep arriving from
// several goroutines throughout, so that -race sees any start racing
// the wait.
func TestStoppingWaitsAndRefuses(t *testing.T) {
	search := t.TempDir()
	writeProvider(t, filepath.Join(search, "p"), "", map[string]string{"verify": `echo verified`})
	m, _ := newManager(t, Config{SearchPath: []string{search}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()

	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	stop := make(chan struct{})
	for range 4 {
		id := newVolumeID(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := m.Do(context.Background(), "verify", Request{VolumeID: id, Machine: "m", Provider: "p"})
				mu.Lock()
				switch {
				case err == nil:
					ok++
				case rackplane.ErrorCode(err) == rackplane.EUNAVAILABLE && strings.Contains(rackplane.ErrorMessage(err), "the rack is stopping"):
					refused++
				default:
					t.Errorf("verify: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if ok == 0 || refused == 0 {
		t.Fatalf("%d ran, %d refused: want actions before the stop and refusals after", ok, refused)
	}
	t.Logf("%d ran, %d refused", ok, refused)
}
