package keyfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rackplane/rackplane/internal/keyfile"
)

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.key")
	// Racing first starts all get the one key that landed.
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := keyfile.LoadOrCreate(path, 32)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if len(k) != 32 || !bytes.Equal(k, keys[0]) {
			t.Fatalf("keys %x and %x: racing creators must end with one key", keys[0], k)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("the key's directory holds %v: the creators' own files stay behind", ents)
	}
	again, err := keyfile.LoadOrCreate(path, 32)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("reopened: %x %v", again, err)
	}

	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"short", []byte("short")},
		{"long", bytes.Repeat([]byte{1}, 33)},
	} {
		p := filepath.Join(t.TempDir(), tc.name)
		if err := os.WriteFile(p, tc.content, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := keyfile.LoadOrCreate(p, 32)
		if err == nil || !strings.Contains(err.Error(), "remove it") {
			t.Errorf("%s key file: %v, want refused with what to do", tc.name, err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, tc.content) {
			t.Errorf("%s key file was replaced", tc.name)
		}
	}
}
