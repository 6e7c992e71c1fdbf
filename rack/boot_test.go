package rack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

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
