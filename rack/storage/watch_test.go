package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// summary renders a provider list as "name:valid" or "name:reason".
func summary(ps []Provider) string {
	var parts []string
	for _, p := range ps {
		if p.Valid {
			parts = append(parts, p.Name+":ok")
		} else {
			parts = append(parts, p.Name+":"+p.Reason)
		}
	}
	return strings.Join(parts, " | ")
}

func TestProviderListFollowsDisk(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	copyProvider(t, "testdata/providers/loop", filepath.Join(a, "loop"))
	var mu sync.Mutex
	var hooked []string
	m, pub := newManager(t, Config{SearchPath: []string{a, b, filepath.Join(b, "absent")}, OnChange: func(ps []Provider) {
		mu.Lock()
		defer mu.Unlock()
		hooked = append(hooked, summary(ps))
	}})
	steps := []struct {
		name   string
		change func()
		want   string // "" means no change expected
	}{
		{"nothing changed", func() {}, ""},
		{"add a provider", func() { writeProvider(t, filepath.Join(b, "nas"), "ip NAS address\npool Pool\n", nil) },
			"loop:ok | nas:ok"},
		{"a file that is not a directory is ignored", func() { scriptruntest.WriteFile(t, filepath.Join(b, "README"), "x", 0o644) }, ""},
		{"break a script", func() { os.Chmod(filepath.Join(a, "loop", "attach"), 0o644) },
			"loop:script attach is not executable | nas:ok"},
		{"repair it", func() { os.Chmod(filepath.Join(a, "loop", "attach"), 0o755) },
			"loop:ok | nas:ok"},
		{"break parameters.list", func() { scriptruntest.WriteFile(t, filepath.Join(b, "nas", parametersFile), "ip x\nIP again\n", 0o644) },
			`loop:ok | nas:parameters.list: line 2: parameter "IP" repeats line 1 (EXTP_IP)`},
		{"shadowed provider", func() { copyProvider(t, "testdata/providers/loop", filepath.Join(b, "loop")) },
			"loop:ok | loop:shadowed by " + filepath.Join(a, "loop") + ", earlier in the search path | nas:parameters.list: line 2: parameter \"IP\" repeats line 1 (EXTP_IP)"},
		{"remove a provider", func() { os.RemoveAll(filepath.Join(a, "loop")) },
			"loop:ok | nas:parameters.list: line 2: parameter \"IP\" repeats line 1 (EXTP_IP)"},
		{"bad directory name", func() { writeProvider(t, filepath.Join(b, "has space"), "", nil) },
			"has space:directory name \"has space\" is not a valid provider name (letters, digits, '_', '.', '-'; at most 64) | loop:ok | nas:parameters.list: line 2: parameter \"IP\" repeats line 1 (EXTP_IP)"},
		{"optional script not executable", func() { scriptruntest.WriteFile(t, filepath.Join(b, "loop", "snapshot"), "#!/bin/sh\n", 0o644) },
			"has space:directory name \"has space\" is not a valid provider name (letters, digits, '_', '.', '-'; at most 64) | loop:script snapshot is not executable | nas:parameters.list: line 2: parameter \"IP\" repeats line 1 (EXTP_IP)"},
	}
	if got := summary(m.Providers()); got != "loop:ok" {
		t.Fatalf("at start: %s", got)
	}
	for _, s := range steps {
		mu.Lock()
		before := len(hooked)
		mu.Unlock()
		s.change()
		changed := m.Rescan()
		got := summary(m.Providers())
		mu.Lock()
		calls := hooked[before:]
		mu.Unlock()
		switch {
		case s.want == "" && (changed || len(calls) != 0):
			t.Errorf("%s: reported a change: %s", s.name, got)
		case s.want != "" && (!changed || got != s.want):
			t.Errorf("%s: changed=%v\n got %s\nwant %s", s.name, changed, got, s.want)
		case s.want != "" && (len(calls) != 1 || calls[0] != s.want):
			t.Errorf("%s: hook got %q", s.name, calls)
		}
	}
	// Every change went out as an event with the full list.
	evs := pub.of(events.TypeStorageProvidersChanged)
	if len(evs) != len(hooked) {
		t.Fatalf("%d events for %d changes", len(evs), len(hooked))
	}
	var last events.StorageProvidersChanged
	if err := evs[len(evs)-1].DecodeData(&last); err != nil {
		t.Fatal(err)
	}
	if summary(last.Providers) != summary(m.Providers()) || evs[0].Subject != "rack/"+testRack {
		t.Errorf("last event %s on %s", summary(last.Providers), evs[0].Subject)
	}
	nas := m.Providers()[2]
	if nas.Name != "nas" || len(nas.Parameters) != 0 {
		t.Errorf("an invalid provider lists parameters: %+v", nas)
	}
}

func TestRunPollsSearchPath(t *testing.T) {
	dir := t.TempDir()
	changes := make(chan []Provider, 4)
	m, pub := newManager(t, Config{SearchPath: []string{dir}, PollInterval: 20 * time.Millisecond,
		OnChange: func(ps []Provider) { changes <- ps }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	scriptruntest.Eventually(t, "the start-up provider list", func() bool { return len(pub.of(events.TypeStorageProvidersChanged)) == 1 })
	writeProvider(t, filepath.Join(dir, "fresh"), "", nil)
	// A poll may catch the directory half-written; the list settles on
	// the finished provider at a later poll.
	timeout := time.After(5 * time.Second)
	for seen := ""; seen != "fresh:ok"; {
		select {
		case ps := <-changes:
			seen = summary(ps)
		case <-timeout:
			t.Fatalf("a new provider went unnoticed (last seen %q)", seen)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
