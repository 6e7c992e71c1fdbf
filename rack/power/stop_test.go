package power

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

// TestStoppingWaitsAndRefuses: when the rack stops, Run waits for the
// actions under way, and an action asked while it stops (an rpc in
// flight) is refused as busy, saying so, and runs nothing. Requests keep
// arriving from several goroutines throughout, so that -race sees any
// start of an action racing the wait.
func TestStoppingWaitsAndRefuses(t *testing.T) {
	m := newManager(t, Config{})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx) }()

	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				bmc := bmcFile(t, dir, fmt.Sprintf("bmc-%d-%d", g, i), "off")
				r := m.Do(context.Background(), Request{MachineID: fmt.Sprintf("m%d", g), Driver: "plainbmc", Action: events.PowerOn,
					Parameters: events.PowerParameters{Address: bmc}})
				checkReply(t, r)
				mu.Lock()
				outcomes[r.Outcome]++
				mu.Unlock()
				if r.Outcome == events.PowerOutcomeBusy && r.Error != "the rack is stopping: nothing ran; ask again once it is back" {
					t.Errorf("busy while stopping: %+v", r)
				}
				if r.Outcome == events.PowerOutcomeBusy {
					if got := readTrim(t, bmc); got != "off" {
						t.Errorf("a refused action ran: %s is %s", filepath.Base(bmc), got)
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // some actions run
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	time.Sleep(100 * time.Millisecond) // some are refused
	close(stop)
	wg.Wait()
	if outcomes[events.PowerOutcomeOK] == 0 || outcomes[events.PowerOutcomeBusy] == 0 {
		t.Fatalf("outcomes %v: want actions run before the stop and refused after", outcomes)
	}
	t.Logf("outcomes %v", outcomes)
}
