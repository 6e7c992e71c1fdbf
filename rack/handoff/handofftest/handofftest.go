package handofftest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
)

// RackID is the rack the fixtures decide for.
const RackID = "0190b6a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"

// Recorder collects published events and validates each against its schema.
type Recorder struct {
	t         testing.TB
	validator *events.Validator
	mu        sync.Mutex
	events    []events.Event
	invalid   []string
}

// NewRecorder returns a recorder that fails t at cleanup if any event it
// saw broke its schema.
func NewRecorder(t testing.TB) *Recorder {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{t: t, validator: v}
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, s := range r.invalid {
			t.Errorf("invalid event: %s", s)
		}
	})
	return r
}

// Publish records e.
func (r *Recorder) Publish(e events.Event) {
	err := r.validator.Validate(e)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		raw, _ := events.Encode(e)
		r.invalid = append(r.invalid, fmt.Sprintf("%v: %s", err, raw))
	}
	r.events = append(r.events, e)
}

// Events returns the events of type typ (all when typ is "").
func (r *Recorder) Events(typ string) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.events {
		if typ == "" || e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// Wait polls until match holds for some event of type typ after the
// first `after` of them, and returns it.
func (r *Recorder) Wait(typ string, after int, timeout time.Duration, match func(events.Event) bool) (events.Event, bool) {
	deadline := time.Now().Add(timeout)
	for {
		evs := r.Events(typ)
		for _, e := range evs[min(after, len(evs)):] {
			if match(e) {
				return e, true
			}
		}
		if time.Now().After(deadline) {
			return events.Event{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Decisions is a fixed decision table.
type Decisions map[string]events.BootDecision

// Lookup implements handoff.Decisions.
func (d Decisions) Lookup(_ context.Context, mac string) (events.BootDecision, bool) {
	dec, ok := d[mac]
	return dec, ok
}

// DirVersions serves versioned files from a directory laid out as
// <name>/<version>/... : "images/<os>/<version>/linux" has version
// "images/<os>/<version>". Only names under the images/ and bootloaders/
// prefixes are versioned.
type DirVersions struct{ Root *os.Root }

// OpenVersioned implements handoff.Versions.
func (v DirVersions) OpenVersioned(_ context.Context, name string) (*os.File, string, error) {
	if !strings.HasPrefix(name, "images/") && !strings.HasPrefix(name, "bootloaders/") {
		return nil, "", fs.ErrNotExist
	}
	f, err := v.Root.Open(name)
	if err != nil {
		return nil, "", err
	}
	return f, filepath.Dir(name), nil
}

// Tree is a resolver over a temporary tree.
type Tree struct {
	Dir      string // parent of Root and Store
	Root     string // fallback root
	Store    string // versioned files
	Outside  string // a secret file outside both
	Recorder *Recorder
	Resolver *handoff.Resolver
	Registry *prometheus.Registry // the resolver's metrics
}

// Build makes a tree with a fallback root (pxelinux.0, a symlink escaping
// the root, a FIFO), a versioned store, and a resolver with decisions and
// the renderer configured by rc.
func Build(t testing.TB, decisions handoff.Decisions, rc bootconfig.RenderConfig) *Tree {
	t.Helper()
	dir := t.TempDir()
	tr := &Tree{Dir: dir, Root: filepath.Join(dir, "root"), Store: filepath.Join(dir, "store"), Outside: filepath.Join(dir, "secret")}
	must(t, os.MkdirAll(filepath.Join(tr.Root, "sub"), 0o755))
	must(t, os.MkdirAll(filepath.Join(tr.Store, "images", "debian", "v1"), 0o755))
	must(t, os.WriteFile(tr.Outside, []byte("secret outside the roots\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(tr.Root, "pxelinux.0"), []byte("pxelinux boot loader\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(tr.Root, "sub", "file.txt"), []byte("a file in a subdirectory\n"), 0o644))
	must(t, os.Symlink(tr.Outside, filepath.Join(tr.Root, "escape")))
	must(t, os.Symlink("../../secret", filepath.Join(tr.Root, "sub", "escape-rel")))
	must(t, os.Symlink("pxelinux.0", filepath.Join(tr.Root, "inside-link")))
	must(t, mkfifo(filepath.Join(tr.Root, "fifo")))
	must(t, os.WriteFile(filepath.Join(tr.Store, "images", "debian", "v1", "linux"), []byte("versioned kernel v1\n"), 0o644))
	store, err := os.OpenRoot(tr.Store)
	must(t, err)
	t.Cleanup(func() { store.Close() })
	render, err := bootconfig.NewRenderer(rc)
	must(t, err)
	tr.Recorder = NewRecorder(t)
	tr.Registry = prometheus.NewRegistry()
	tr.Resolver, err = handoff.NewResolver(handoff.Config{RackID: RackID, Root: tr.Root}, decisions, DirVersions{store}, render, tr.Recorder, slog.New(slog.DiscardHandler), tr.Registry)
	must(t, err)
	t.Cleanup(func() { tr.Resolver.Close() })
	return tr
}

// WriteFile writes a file of size pseudo-random bytes under the root and
// returns its content.
func (tr *Tree) WriteFile(t testing.TB, name string, size int) []byte {
	t.Helper()
	b := Pattern(size)
	must(t, os.WriteFile(filepath.Join(tr.Root, name), b, 0o644))
	return b
}

// Pattern returns size bytes that differ from block to block, so a
// misplaced or repeated TFTP block shows.
func Pattern(size int) []byte {
	b := make([]byte, size)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Server is a boot front-end: TFTP, HTTP, the offload socket.
type Server interface {
	Listen() error
	Run(ctx context.Context) error
}

// Serve binds srv and runs it until the test ends; the test fails if Run
// returns an error.
func Serve(t testing.TB, srv Server) {
	t.Helper()
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// Log is what a server logged, as slog's text lines, for a test to wait
// for a line.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Logger logs into l.
func (l *Log) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Wait waits up to 5 seconds for a line holding every one of parts.
func (l *Log) Wait(t testing.TB, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		text := l.buf.String()
		l.mu.Unlock()
		for _, line := range strings.Split(text, "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q logged:\n%s", parts, text)
		}
	}
}
