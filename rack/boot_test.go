package rack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/httpboot"
	"github.com/rackplane/rackplane/rack/images"
)

// TestGRUBModulesComeFromAmd64GRUB: grub/x86_64-efi/<name>.mod is served
// from the newest amd64 grub-efi version that has it, never from another
// bootloader's or another arch's file of that name, which GRUB could not
// load.
func TestGRUBModulesComeFromAmd64GRUB(t *testing.T) {
	src := t.TempDir()
	var m images.Manifest
	m.Format = images.ManifestFormat
	add := func(bootloader, arch, version string, files map[string]string) {
		v := images.SourceVersion{Kind: images.KindBootloader, Bootloader: bootloader, Arch: arch, Version: version}
		for name, body := range files {
			path := filepath.Join(bootloader, arch, version, name)
			if err := os.MkdirAll(filepath.Join(src, filepath.Dir(path)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, path), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(body))
			v.Files = append(v.Files, images.SourceFile{Name: name, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(body)), Path: path})
		}
		m.Versions = append(m.Versions, v)
	}
	add("grub-efi", "amd64", "2.06-13", map[string]string{"grubx64.efi": "grub amd64 2.06", "http.mod": "http.mod of amd64 grub 2.06"})
	add("grub-efi", "amd64", "2.12-1", map[string]string{"grubx64.efi": "grub amd64 2.12", "http.mod": "http.mod of amd64 grub 2.12"})
	// Sorted before grub-efi, and newer: neither may lend its modules.
	add("chain", "amd64", "9", map[string]string{"http.mod": "another loader's http.mod", "tftp.mod": "another loader's tftp.mod"})
	add("grub-efi", "arm64", "3.0", map[string]string{"grubaa64.efi": "grub arm64", "http.mod": "arm64 http.mod", "fs.mod": "arm64 fs.mod"})
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := images.Open(ctx, images.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if st, err := store.Import(ctx, images.Source{Dir: src}); err != nil || len(st.Versions) != 4 {
		t.Fatalf("import: %+v, %v", st, err)
	}

	v := versioned{store: store}
	tests := []struct {
		name string
		want string // "": not found
	}{
		{"grub/x86_64-efi/http.mod", "http.mod of amd64 grub 2.12"},
		{"images/grub/x86_64-efi/http.mod", "http.mod of amd64 grub 2.12"},
		{"grub/x86_64-efi/fs.mod", ""},   // arm64 GRUB's only
		{"grub/x86_64-efi/tftp.mod", ""}, // another loader's only
		{"grub/x86_64-efi/grubaa64.efi", ""},
		{"grubx64.efi", "grub amd64 2.12"}, // bare names: any bootloader, as before
		{"tftp.mod", "another loader's tftp.mod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := v.OpenVersioned(ctx, tt.name)
			if tt.want == "" {
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("OpenVersioned: %v, want not found", err)
				}
				if f != nil {
					f.Close()
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, err := io.ReadAll(f)
			if err != nil || string(got) != tt.want {
				t.Fatalf("served %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

// TestHTTPBootServesTheStoreAsItIsNow: the boot HTTP server, which keeps
// the image store's files open across requests, serves a file as the
// store holds it at each request: after a corrupt copy is quarantined
// and imported again, the new copy (never the old one it had open); after
// the version is deleted, nothing, with the file no longer held open.
func TestHTTPBootServesTheStoreAsItIsNow(t *testing.T) {
	const size = 300_000
	content := handofftest.Pattern(size)
	src := t.TempDir()
	sum := sha256.Sum256(content)
	hexSum := hex.EncodeToString(sum[:])
	m := images.Manifest{Format: images.ManifestFormat, Versions: []images.SourceVersion{{
		Kind: images.KindImage, OS: "debian", Release: "bookworm", Arch: "amd64", Subarch: "generic", Label: "test", Version: "1",
		Files: []images.SourceFile{{Name: "initrd", SHA256: hexSum, Size: size}},
	}}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "initrd"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dataDir := t.TempDir()
	// A clock to move past the window in which a handed-out version may
	// not be deleted.
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	store, err := images.Open(ctx, images.Config{DataDir: dataDir, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return *now.Load() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	st, err := store.Import(ctx, images.Source{Dir: src})
	if err != nil || len(st.Versions) != 1 {
		t.Fatalf("import: %+v, %v", st, err)
	}
	id := st.Versions[0]
	render, err := bootconfig.NewRenderer(bootconfig.RenderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := handoff.NewResolver(handoff.Config{RackID: handofftest.RackID}, handofftest.Decisions{}, versioned{store: store},
		render, handofftest.NewRecorder(t), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := httpboot.NewServer(httpboot.Config{Addresses: []string{"127.0.0.1:0"}}, resolver, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	handofftest.Serve(t, srv)
	url := "http://" + srv.Addrs()[0].String() + "/images/" + id + "/initrd"

	// The middle of the file, where the corruption below goes.
	lo, hi := size/2-1000, size/2+1000
	get := func(wantStatus int) []byte {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", lo, hi))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != wantStatus {
			t.Fatalf("GET: %d %q, want %d", resp.StatusCode, body, wantStatus)
		}
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	same := func(what string, body []byte) {
		t.Helper()
		if string(body) != string(content[lo:hi+1]) {
			t.Fatalf("%s: the range is not the file's", what)
		}
	}
	same("imported", get(http.StatusPartialContent))

	// Corrupt in place (the inode the server holds open), as a disk
	// would: the scrub quarantines it, and the version is unusable.
	blob := filepath.Join(dataDir, "images", "blobs", hexSum[:2], hexSum)
	if err := os.Chmod(blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(blob, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^content[size/2]}, size/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if rep, err := store.Scrub(ctx); err != nil || len(rep.Corrupt) != 1 {
		t.Fatalf("scrub: %+v, %v", rep, err)
	}
	get(http.StatusServiceUnavailable)

	// Imported again: a new, whole copy at the blob's path.
	if _, err := store.Import(ctx, images.Source{Dir: src}); err != nil {
		t.Fatal(err)
	}
	same("repaired", get(http.StatusPartialContent))
	same("repaired, again", get(http.StatusPartialContent))

	later := start.Add(24 * time.Hour)
	now.Store(&later)
	if _, err := store.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	get(http.StatusNotFound)
	if open := openFilesNamed(t, hexSum); len(open) > 0 {
		t.Fatalf("the deleted file is still open: %v", open)
	}
}

// openFilesNamed lists the process's open files whose path holds name.
func openFilesNamed(t *testing.T, name string) []string {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var out []string
	for _, de := range des {
		p, err := os.Readlink(filepath.Join("/proc/self/fd", de.Name()))
		if err == nil && strings.Contains(p, name) {
			out = append(out, p)
		}
	}
	return out
}
