package preseedcache_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
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

	// The same deployment re-emitted with another hostname and kernel
	// parameters: the cached preseed stays (and is under the current
	// key), and is fetched again in case the region renders it
	// differently now.
	before := p.Current(machineA)
	renamed := install("52:54:00:00:00:a1", machineA, "quiet")
	renamed.Hostname = "renamed"
	p.Decision(renamed)
	if got := p.Current(machineA); got != before || got == "" {
		t.Fatalf("a re-emitted decision changed the deployment's key from %q to %q", before, got)
	}
	waitFor(t, "machine A's preseed refreshed", cachedContent(store, machineA, "fetch 2"))
	if pre, err := store.Get(machineA); err != nil || pre.Decision != p.Current(machineA) {
		t.Fatalf("machine A's entry %+v %v, want it under key %s", pre, err, p.Current(machineA))
	}

	// A new deployment of A (another image): the old preseed, with the
	// old deployment's token, is never served again.
	redeploy := install("52:54:00:00:00:a1", machineA)
	redeploy.ImageVer = "v2"
	p.Decision(redeploy)
	if p.Current(machineA) == before {
		t.Fatal("another image is the same deployment")
	}
	waitFor(t, "machine A's new deployment cached", cachedContent(store, machineA, "fetch 3"))

	// Installed (local boot) and deleted (cleared): dropped.
	p.Decision(events.BootDecision{MAC: "52:54:00:00:00:a1", MachineID: machineA, Purpose: events.BootPurposeLocal})
	if p.Current(machineA) != "" {
		t.Fatal("machine A still installing after its local boot decision")
	}
	waitFor(t, "machine A's preseed dropped after its local boot decision", gone(store, machineA))
	p.Cleared("52:54:00:00:00:b1", "")
	waitFor(t, "machine B's preseed dropped after its decision was cleared", gone(store, machineB))
	if n := store.Len(); n != 0 {
		t.Fatalf("%d entries left", n)
	}
}

func gone(s *preseedcache.Store, id string) func() error {
	return func() error {
		if p, err := s.Get(id); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
			return fmt.Errorf("still cached: %+v %v", p, err)
		}
		return nil
	}
}

// TestDecisionTouchesNoDisk: Decision is a hook of the boot config cache,
// which must not block. Machine A's cache file is a FIFO here, which
// blocks whoever reads it: Decision returns all the same (had it read the
// store, the test would hang until its timeout), and Run replaces the file
// with the fetched preseed.
func TestDecisionTouchesNoDisk(t *testing.T) {
	dir := t.TempDir()
	store := open(t, dir, preseedcache.Config{})
	if err := syscall.Mkfifo(sealedFile(dir, machineA), 0o600); err != nil {
		t.Fatal(err)
	}
	region := &regionPreseeds{fetches: map[string]int{}, errs: map[string][]error{}}
	p, err := preseedcache.NewPrefetcher(store, region.fetch, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Decision(install("52:54:00:00:00:a1", machineA))
	if p.Current(machineA) == "" {
		t.Fatal("machine A's install decision not taken")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// Read only once Run has put the fetched preseed in the FIFO's place.
	waitFor(t, "machine A fetched", func() error {
		if len(p.Pending()) > 0 || store.Len() == 0 {
			return fmt.Errorf("pending %v, %d cached", p.Pending(), store.Len())
		}
		return nil
	})
	if err := cachedContent(store, machineA, "fetch 1")(); err != nil {
		t.Fatal(err)
	}
}
