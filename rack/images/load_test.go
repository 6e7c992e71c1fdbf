package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rackplane/rackplane"
)

// logBuffer keeps what a JSON slog handler writes, for tests that check
// what an operator reads in the log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the logged records whose message is msg.
func (b *logBuffer) records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestBadStoredManifestIsQuarantined: a version manifest on disk that a
// disk or an operator broke is moved to quarantine at Open, with the
// reason in the log, and the version is gone from the store; the other
// versions stay usable. A manifest that parses but fails the stored check
// is as bad as one that does not parse: its files might lie outside the
// store.
func TestBadStoredManifestIsQuarantined(t *testing.T) {
	tests := []struct {
		name   string
		spoil  func(t *testing.T, path string, m map[string]any) // breaks the manifest at path
		reason string                                            // in the log record's err
	}{
		{"fields no longer match the id", func(t *testing.T, p string, m map[string]any) {
			m["version"] = "20261199"
			writeJSON(t, p, m)
		}, "does not match its fields"},
		{"file outside the store", func(t *testing.T, p string, m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["sha256"] = "../../../../../../../../etc/passwd"
			writeJSON(t, p, m)
		}, `file "initrd" is malformed`},
		{"file hash empty", func(t *testing.T, p string, m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["sha256"] = ""
			writeJSON(t, p, m)
		}, `file "initrd" is malformed`},
		{"no files", func(t *testing.T, p string, m map[string]any) {
			m["files"] = []any{}
			writeJSON(t, p, m)
		}, "has no files"},
		{"unknown kind", func(t *testing.T, p string, m map[string]any) {
			m["kind"] = "firmware"
			writeJSON(t, p, m)
		}, `version kind "firmware" is neither image nor bootloader`},
		{"not JSON", func(t *testing.T, p string, _ map[string]any) {
			if err := os.WriteFile(p, []byte("{\"id\": "), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "unexpected end of JSON input"},
		{"stored under another version's name", func(t *testing.T, p string, m map[string]any) {
			if err := os.Rename(p, filepath.Join(filepath.Dir(p), versionFileName("ubuntu/amd64/ga-24.04/noble/stable/1"))); err != nil {
				t.Fatal(err)
			}
		}, "stored under the wrong name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			bad, f1 := imageVersion("20261101", map[string][]byte{"linux": content("k1", 100), "initrd": content("i1", 200)})
			good, f2 := imageVersion("20261102", map[string][]byte{"linux": content("k2", 100), "initrd": content("i2", 200)})
			ss := newSourceServer(t, bad, good)
			ss.addFiles(f1)
			ss.addFiles(f2)
			e.importURL(ss.url())

			stored := filepath.Join(e.dir, "images", "versions", versionFileName(bad.ID()))
			raw, err := os.ReadFile(stored)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			tt.spoil(t, stored, m)
			var log logBuffer
			e.cfg.Logger = slog.New(slog.NewJSONHandler(io.MultiWriter(&log, testWriter{t}), nil))
			e.reopen()

			if ids := e.ids(); len(ids) != 1 || ids[0] != good.ID() {
				t.Fatalf("versions after open: %v, want only %s", ids, good.ID())
			}
			if vi, err := e.s.Version(good.ID()); err != nil || !vi.Usable {
				t.Fatalf("the intact version: %+v %v", vi, err)
			}
			_, err = e.s.OpenFile(context.Background(), bad.ID()+"/initrd")
			wantCode(t, err, rackplane.ENOTFOUND)
			if got := e.files("versions"); len(got) != 1 || filepath.Base(got[0]) != versionFileName(good.ID()) {
				t.Fatalf("version manifests left: %v", got)
			}
			q := e.files("quarantine")
			if len(q) != 1 || !strings.HasPrefix(filepath.Base(q[0]), "version-") {
				t.Fatalf("quarantine holds %v, want the broken manifest", q)
			}
			recs := log.records(t, "quarantining unreadable version manifest")
			if len(recs) != 1 {
				t.Fatalf("%d quarantine log records, want 1", len(recs))
			}
			r := recs[0]
			if r["level"] != "ERROR" || "version-"+r["file"].(string) != filepath.Base(q[0]) {
				t.Fatalf("log record %v does not name the quarantined file %s", r, filepath.Base(q[0]))
			}
			if reason, _ := r["err"].(string); !strings.Contains(reason, tt.reason) {
				t.Fatalf("logged reason %q, want it to say %q", reason, tt.reason)
			}
		})
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
