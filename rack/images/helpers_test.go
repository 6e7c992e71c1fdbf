package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

const testRackID = "0195a3f0-1c2d-7e8f-9a0b-1c2d3e4f5a6b"

// recorder is the store's publisher in tests; it validates every event
// against its schema as it arrives, so every test checks what it emits.
type recorder struct {
	t  testing.TB
	v  *events.Validator
	mu sync.Mutex
	ev []events.Event
}

func newRecorder(t testing.TB) *recorder {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return &recorder{t: t, v: v}
}

func (r *recorder) Publish(e events.Event) {
	if err := r.v.Validate(e); err != nil {
		r.t.Errorf("event %s does not validate: %v\n%s", e.Type, err, e.Data)
	}
	r.mu.Lock()
	r.ev = append(r.ev, e)
	r.mu.Unlock()
}

func (r *recorder) ofType(typ string) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.ev {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type env struct {
	t       testing.TB
	dir     string
	clock   *clock
	rec     *recorder
	changes *counter
	cfg     Config
	s       *Store
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) inc() { c.mu.Lock(); c.n++; c.mu.Unlock() }

func (c *counter) get() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// newEnv opens a store in a fresh data dir; mutate adjusts the config.
func newEnv(t testing.TB, mutate func(*Config)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: newClock(), rec: newRecorder(t), changes: &counter{}}
	e.cfg = Config{
		DataDir: e.dir, RackID: testRackID, Publisher: e.rec, Logger: testLogger(t),
		Now: e.clock.Now, StallTimeout: 5 * time.Second, OnChange: e.changes.inc,
	}
	if mutate != nil {
		mutate(&e.cfg)
	}
	e.open()
	return e
}

func (e *env) open() {
	e.t.Helper()
	s, err := Open(context.Background(), e.cfg)
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.s = s
	e.t.Cleanup(func() { s.Close() })
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func (e *env) importURL(u string) ImportStatus {
	e.t.Helper()
	st, err := e.s.Import(context.Background(), Source{URL: u})
	if err != nil {
		e.t.Fatalf("import %s: %v", u, err)
	}
	return st
}

// files lists the regular files under the store's subdirectory sub.
func (e *env) files(sub string) []string {
	e.t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(e.dir, "images", sub), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func (e *env) ids() []string {
	var out []string
	for _, v := range e.s.Versions() {
		out = append(out, v.ID)
	}
	return out
}

func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %s, got nil", code)
	}
	if got := rackplane.ErrorCode(err); got != code {
		t.Fatalf("want error code %s, got %s (%v)", code, got, err)
	}
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// content makes deterministic file content of n bytes.
func content(seed string, n int) []byte {
	out := make([]byte, 0, n+32)
	h := sha256.Sum256([]byte(seed))
	for len(out) < n {
		out = append(out, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return out[:n]
}

// imageVersion builds a source version whose files are served at
// <version>/<name> by a sourceServer.
func imageVersion(version string, files map[string][]byte) (SourceVersion, map[string][]byte) {
	v := SourceVersion{Kind: KindImage, OS: "ubuntu", Release: "noble", Arch: "amd64", Subarch: "ga-24.04", Label: "stable", Version: version}
	served := map[string][]byte{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := version + "/" + name
		v.Files = append(v.Files, SourceFile{Name: name, SHA256: sum(files[name]), Size: int64(len(files[name])), Path: p})
		served[p] = files[name]
	}
	return v, served
}

// sourceServer is an HTTP image source on loopback: a manifest with an
// ETag and Last-Modified, and files by path. It counts what it serves.
type sourceServer struct {
	t   testing.TB
	srv *httptest.Server

	mu           sync.Mutex
	manifest     []byte
	files        map[string][]byte
	etag         bool
	lastModified bool
	fileHook     func(w http.ResponseWriter, r *http.Request, p string) bool // true: handled
	manifestHook func(w http.ResponseWriter, r *http.Request) bool

	manifestStatuses []int
	conditional      int // manifest requests that carried a validator
	fileGets         map[string]int
}

func newSourceServer(t testing.TB, versions ...SourceVersion) *sourceServer {
	ss := &sourceServer{t: t, files: map[string][]byte{}, fileGets: map[string]int{}, etag: true, lastModified: true}
	ss.setManifest(versions...)
	ss.srv = httptest.NewServer(http.HandlerFunc(ss.serve))
	t.Cleanup(ss.srv.Close)
	return ss
}

func (ss *sourceServer) setManifest(versions ...SourceVersion) {
	ss.with(func() { ss.manifest = manifestBytes(ss.t, versions...) })
}

func manifestBytes(t testing.TB, versions ...SourceVersion) []byte {
	b, err := json.Marshal(Manifest{Format: ManifestFormat, Versions: versions})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// with runs f with the server's lock held, for changing its behaviour.
func (ss *sourceServer) with(f func()) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	f()
}

// stats returns what the source served: file GETs by path, conditional
// manifest requests, manifest statuses.
func (ss *sourceServer) stats() (gets map[string]int, conditional int, statuses []int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return maps.Clone(ss.fileGets), ss.conditional, slices.Clone(ss.manifestStatuses)
}

func (ss *sourceServer) addFiles(files map[string][]byte) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, v := range files {
		ss.files[k] = v
	}
}

func (ss *sourceServer) url() string { return ss.srv.URL + "/images/manifest.json" }

var lastModified = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func (ss *sourceServer) serve(w http.ResponseWriter, r *http.Request) {
	ss.mu.Lock()
	mhook, fhook, manifest := ss.manifestHook, ss.fileHook, ss.manifest
	useETag, useLM := ss.etag, ss.lastModified
	ss.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/images/")
	if p == "manifest.json" {
		if mhook != nil && mhook(w, r) {
			return
		}
		etag := `"` + sum(manifest)[:16] + `"`
		if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
			ss.mu.Lock()
			ss.conditional++
			ss.mu.Unlock()
		}
		if useETag {
			w.Header().Set("ETag", etag)
		}
		if useLM {
			w.Header().Set("Last-Modified", lastModified.Format(http.TimeFormat))
		}
		notModified := useETag && r.Header.Get("If-None-Match") == etag
		if !useETag && useLM {
			if t, err := http.ParseTime(r.Header.Get("If-Modified-Since")); err == nil && !lastModified.After(t) {
				notModified = true
			}
		}
		status := http.StatusOK
		if notModified {
			status = http.StatusNotModified
		}
		ss.mu.Lock()
		ss.manifestStatuses = append(ss.manifestStatuses, status)
		ss.mu.Unlock()
		w.WriteHeader(status)
		if status == http.StatusOK {
			w.Write(manifest)
		}
		return
	}
	ss.mu.Lock()
	ss.fileGets[p]++
	b, ok := ss.files[p]
	ss.mu.Unlock()
	if fhook != nil && fhook(w, r, p) {
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.Write(b)
}

func (ss *sourceServer) totalFileGets() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := 0
	for _, c := range ss.fileGets {
		n += c
	}
	return n
}

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func isCode(err error, code string) bool {
	var e *rackplane.Error
	return errors.As(err, &e) && e.Code == code
}
