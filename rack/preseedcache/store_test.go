package preseedcache_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/rack/preseedcache"
)

const (
	machineA = "0190f0e0-0000-7000-8000-00000000000a"
	machineB = "0190f0e0-0000-7000-8000-00000000000b"
	machineC = "0190f0e0-0000-7000-8000-00000000000c"
)

func open(t *testing.T, dir string, cfg preseedcache.Config) *preseedcache.Store {
	t.Helper()
	cfg.DataDir = dir
	s, err := preseedcache.Open(cfg, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func sealedFile(dir, id string) string { return filepath.Join(dir, preseedcache.Dir, id+".sealed") }

func TestRoundTripSealsAtRest(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, preseedcache.Config{})
	const secret = "d-i passwd/root-password-crypted password $6$secret-hash"
	if err := s.Put(preseedcache.Preseed{MachineID: machineA, Name: "vm", Version: 3, Content: secret}); err != nil {
		t.Fatal(err)
	}
	// A new store (a restarted rack) reads it back.
	got, err := open(t, dir, preseedcache.Config{}).Get(machineA)
	if err != nil || got.Content != secret || got.Version != 3 || got.Name != "vm" {
		t.Fatalf("got %+v %v", got, err)
	}
	raw, err := os.ReadFile(sealedFile(dir, machineA))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "secret-hash") || strings.Contains(string(raw), "passwd") {
		t.Fatalf("the cache file holds the preseed in clear: %q", raw)
	}
	fi, err := os.Stat(filepath.Join(dir, preseedcache.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
}

func TestRefused(t *testing.T) {
	put := func(t *testing.T, dir string) {
		s := open(t, dir, preseedcache.Config{})
		for _, id := range []string{machineA, machineB} {
			if err := s.Put(preseedcache.Preseed{MachineID: id, Name: "p", Version: 1, Content: "content of " + id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"a flipped byte", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(sealedFile(dir, machineA))
			b[len(b)-5] ^= 1
			os.WriteFile(sealedFile(dir, machineA), b, 0o600)
		}},
		{"cut short", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(sealedFile(dir, machineA))
			os.WriteFile(sealedFile(dir, machineA), b[:len(b)/2], 0o600)
		}},
		{"another machine's entry", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(sealedFile(dir, machineB))
			os.WriteFile(sealedFile(dir, machineA), b, 0o600)
		}},
		{"another key (a copied cache without its key file)", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, preseedcache.KeyFile)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			put(t, dir)
			tt.damage(t, dir)
			s := open(t, dir, preseedcache.Config{})
			if p, err := s.Get(machineA); rackplane.ErrorCode(err) != rackplane.ENOTFOUND || p.Content != "" {
				t.Fatalf("damaged entry served: %+v %v", p, err)
			}
			if _, err := os.Stat(sealedFile(dir, machineA)); !os.IsNotExist(err) {
				t.Fatalf("refused entry still on disk: %v", err)
			}
		})
	}
}

func TestBounded(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	s := open(t, dir, preseedcache.Config{MaxEntries: 2, Now: func() time.Time { return now }})
	ids := []string{machineA, machineB, machineC}
	for i, id := range ids {
		now = now.Add(time.Minute)
		if err := s.Put(preseedcache.Preseed{MachineID: id, Name: "p", Version: int64(i + 1), Content: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != 2 {
		t.Fatalf("%d entries, want 2", s.Len())
	}
	if _, err := s.Get(machineA); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("the oldest entry was kept: %v", err)
	}
	for _, id := range ids[1:] {
		if _, err := s.Get(id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	big := open(t, t.TempDir(), preseedcache.Config{MaxBytes: 1000})
	if err := big.Put(preseedcache.Preseed{MachineID: machineA, Name: "p", Version: 1, Content: strings.Repeat("x", 2000)}); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Fatalf("a preseed beyond MaxBytes: %v", err)
	}
}

// TestOpenAgain: an Open that fails (here: the cache directory cannot be
// made) can be tried again with the same registry, and a bad config is
// told once, every bad setting named.
func TestOpenAgain(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, preseedcache.Dir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if _, err := preseedcache.Open(preseedcache.Config{DataDir: dir}, quiet(), reg); err == nil {
		t.Fatal("opened with a file where the cache directory goes")
	}
	if err := os.Remove(filepath.Join(dir, preseedcache.Dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := preseedcache.Open(preseedcache.Config{DataDir: dir}, quiet(), reg); err != nil {
		t.Fatalf("open again with the same registry: %v", err)
	}

	err := preseedcache.Config{MaxEntries: -1}.Validate()
	for _, want := range []string{"DataDir is required", "MaxEntries -1"} {
		if n := strings.Count(fmt.Sprint(err), want); n != 1 {
			t.Errorf("%q told %d times in %q", want, n, err)
		}
	}
}

func TestTokenMatches(t *testing.T) {
	sum := sha256.Sum256([]byte("the-token"))
	hash := hex.EncodeToString(sum[:])
	for _, tt := range []struct {
		name, hash, token string
		want              bool
	}{
		{"its token", hash, "the-token", true},
		{"another token", hash, "the-token2", false},
		{"empty token", hash, "", false},
		{"no hash cached", "", "the-token", false},
		{"hash of another length", hash[:62], "the-token", false},
		{"not hex", "zz" + hash[2:], "the-token", false},
		{"the hash as token", hash, hash, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := (preseedcache.Preseed{StatusTokenSHA256: tt.hash}).TokenMatches(tt.token); got != tt.want {
				t.Fatalf("TokenMatches = %t, want %t", got, tt.want)
			}
		})
	}
}
