package preseedcache_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/preseedcache"
)

// regionPreseeds stands for the region's preseed rpc: it renders a
// machine's preseed with a counter, so a test sees which fetch an entry
// came from, and answers with the errors queued for that machine first.
type regionPreseeds struct {
	mu      sync.Mutex
	fetches map[string]int
	errs    map[string][]error
}

func (r *regionPreseeds) fetch(_ context.Context, id string) (preseedcache.Preseed, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches[id]++
	if errs := r.errs[id]; len(errs) > 0 {
		r.errs[id] = errs[1:]
		return preseedcache.Preseed{}, errs[0]
	}
	return preseedcache.Preseed{Name: "p", Version: 1, Content: fmt.Sprintf("fetch %d", r.fetches[id])}, nil
}

func (r *regionPreseeds) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches[id]
}

func install(mac, id string, params ...string) events.BootDecision {
	return events.BootDecision{MAC: mac, MachineID: id, Purpose: events.BootPurposeInstall, Kernel: "v1/linux", Initrd: "v1/initrd",
		Params: params, PreseedURL: "http://rack/preseed/" + id}
}

// waitFor polls cond for up to 10s: the prefetcher works in its own
// goroutine.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for i := 0; i < 1000; i++ {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func cachedContent(s *preseedcache.Store, id, want string) func() error {
	return func() error {
		p, err := s.Get(id)
		if err != nil {
			return err
		}
		if p.Content != want {
			return fmt.Errorf("cached %q, want %q", p.Content, want)
		}
		return nil
	}
}

func TestPrefetcherFollowsDeployments(t *testing.T) {
	dir := t.TempDir()
	store := open(t, dir, preseedcache.Config{})
	away := rackplane.Errorf(rackplane.EUNAVAILABLE, "nobody answers")
	region := &regionPreseeds{fetches: map[string]int{}, errs: map[string][]error{
		machineB: {away, away},
		machineC: {rackplane.Errorf(rackplane.ENOTFOUND, "not deploying")},
	}}
	p, err := preseedcache.NewPrefetcher(store, region.fetch, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// A deployment starts: fetched before any installer asks; its second
	// MAC is the same deployment and fetches nothing more.
	p.Decision(install("52:54:00:00:00:a1", machineA))
	waitFor(t, "machine A cached", cachedContent(store, machineA, "fetch 1"))
	p.Decision(install("52:54:00:00:00:a2", machineA))
	// The region away at first: fetched once it answers.
	p.Decision(install("52:54:00:00:00:b1", machineB))
	waitFor(t, "machine B cached after the region came back", cachedContent(store, machineB, "fetch 3"))
	// The region refuses: nothing cached, not asked again.
	p.Decision(install("52:54:00:00:00:c1", machineC))
	waitFor(t, "machine C refused", func() error {
		if len(p.Pending()) != 0 {
			return fmt.Errorf("pending %v", p.Pending())
		}
		return nil
	})
	if _, err := store.Get(machineC); rackplane.ErrorCode(err) != rackplane.ENOTFOUND || region.count(machineC) != 1 {
		t.Fatalf("refused preseed: %v after %d fetches", err, region.count(machineC))
	}
	if n := region.count(machineA); n != 1 {
		t.Fatalf("machine A fetched %d times, want once", n)
	}

	// A new deployment of A (other kernel parameters): the old preseed,
	// with the old deployment's token, is never served again.
	p.Decision(install("52:54:00:00:00:a1", machineA, "quiet"))
	waitFor(t, "machine A's new deployment cached", cachedContent(store, machineA, "fetch 2"))

	// Installed (local boot) and deleted (cleared): dropped.
	p.Decision(events.BootDecision{MAC: "52:54:00:00:00:a1", MachineID: machineA, Purpose: events.BootPurposeLocal})
	if _, err := store.Get(machineA); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("machine A's preseed kept after its local boot decision: %v", err)
	}
	p.Cleared("52:54:00:00:00:b1", "")
	if _, err := store.Get(machineB); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("machine B's preseed kept after its decision was cleared: %v", err)
	}
	if n := store.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}
