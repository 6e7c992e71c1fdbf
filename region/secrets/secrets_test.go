package secrets_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/region/secrets"
)

func newKey(t testing.TB, fill byte) *secrets.Key {
	t.Helper()
	k, err := secrets.NewKey(bytes.Repeat([]byte{fill}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSealOpen: a sealed value opens under its name with any keyring that
// has its key, and every kind of damage is refused.
func TestSealOpen(t *testing.T) {
	oldKey, next := newKey(t, 1), newKey(t, 2)
	old := secrets.NewKeyring(oldKey)
	const name = "licence_key/windows/win2022"
	secret := []byte("ABCDE-12345-FGHIJ-67890-KLMNO")
	sealed := old.Seal(name, secret)
	if bytes.Contains(sealed, secret) || bytes.Contains(sealed, []byte("12345")) {
		t.Fatalf("sealed value holds the secret: %q", sealed)
	}
	if again := old.Seal(name, secret); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one secret are equal: the nonce is not fresh")
	}
	if id, err := secrets.KeyID(sealed); err != nil || id != oldKey.ID() {
		t.Fatalf("key id %q %v, want %s", id, err, oldKey.ID())
	}

	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x40
		return b
	}
	rotated := secrets.NewKeyring(next, oldKey)
	for _, tt := range []struct {
		name    string
		kr      *secrets.Keyring
		open    string
		value   []byte
		wantErr string
	}{
		{"same keyring", old, name, sealed, ""},
		{"rotated keyring, old key kept", rotated, name, sealed, ""},
		{"new key only", secrets.NewKeyring(next), name, sealed, "not given"},
		{"another name", old, "licence_key/windows/win2019", sealed, "does not open"},
		{"version changed", old, name, flip(0), "unknown version"},
		{"key id changed", old, name, flip(3), "not given"},
		{"nonce changed", old, name, flip(12), "does not open"},
		{"ciphertext changed", old, name, flip(22), "does not open"},
		{"tag changed", old, name, flip(len(sealed) - 1), "does not open"},
		{"truncated", old, name, sealed[:len(sealed)-1], "does not open"},
		{"only a header", old, name, sealed[:21], "too short"},
		{"empty", old, name, nil, "too short"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.kr.Open(tt.open, tt.value)
			if tt.wantErr == "" {
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("open: %q %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("open: %q %v, want an error with %q", got, err, tt.wantErr)
			}
			if bytes.Contains([]byte(err.Error()), secret) {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
	if _, err := secrets.NewKeyring(next).Open(name, sealed); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Errorf("unknown key: %v, want ErrUnknownKey", err)
	}
	if !old.Current(sealed) || rotated.Current(sealed) || !rotated.Current(rotated.Seal(name, secret)) {
		t.Error("Current does not follow the sealing key")
	}
	if !rotated.Has(oldKey.ID()) || !rotated.Has(next.ID()) || old.Has(next.ID()) || old.Has("nothex") {
		t.Error("Has")
	}
}

// TestFingerprint: keyed, separated by kind, and not the bare SHA-256.
func TestFingerprint(t *testing.T) {
	a, b := secrets.NewKeyring(newKey(t, 1)), secrets.NewKeyring(newKey(t, 2))
	v := []byte("ABCDE-12345-FGHIJ-67890-KLMNO")
	fa := a.Fingerprint("licence_key", v)
	bare := sha256.Sum256(v)
	for _, tt := range []struct {
		name  string
		other string
		equal bool
	}{
		{"same key, kind and value", a.Fingerprint("licence_key", v), true},
		{"another key", b.Fingerprint("licence_key", v), false},
		{"another kind", a.Fingerprint("bmc_password", v), false},
		{"another value", a.Fingerprint("licence_key", []byte("ABCDE-12345-FGHIJ-67890-KLMNP")), false},
		// The unkeyed fingerprint the region used to store.
		{"bare sha256", hex.EncodeToString(bare[:]), false},
	} {
		if got := fa == tt.other; got != tt.equal {
			t.Errorf("%s: equal %v, want %v (%s, %s)", tt.name, got, tt.equal, fa, tt.other)
		}
	}
	if len(fa) != 64 || strings.Trim(fa, "0123456789abcdef") != "" {
		t.Errorf("fingerprint %q is not 64 hex digits (the licence_key_set schema's form)", fa)
	}
}

func TestParseKey(t *testing.T) {
	good := string(secrets.GenerateKey())
	for _, tt := range []struct {
		name, text, wantErr string
	}{
		{"generated", good, ""},
		{"surrounding space", "  \n" + strings.TrimSpace(good) + "\r\n\n", ""},
		{"empty", "\n", "no key in it"},
		{"not base64", "this is not base64!", "not base64"},
		{"short", "c2hvcnQ=", "5 bytes; want 32"},
		{"hex rather than base64", strings.Repeat("ab", 32), "48 bytes; want 32"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := secrets.ParseKey([]byte(tt.text))
			if tt.wantErr == "" {
				if err != nil || len(k.ID()) != 16 {
					t.Fatalf("%v %v", k, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestEnsureKeyFile: made once, mode 0600, then read back the same.
func TestEnsureKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "secrets.key")
	k1, made, err := secrets.EnsureKeyFile(path, nil)
	if err != nil || !made {
		t.Fatalf("first: made %v, %v", made, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	k2, made, err := secrets.EnsureKeyFile(path, nil)
	if err != nil || made || k2.ID() != k1.ID() {
		t.Fatalf("second: made %v, id %s vs %s, %v", made, k2.ID(), k1.ID(), err)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, text []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, text, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cur, old := write("new.key", secrets.GenerateKey()), write("old.key", secrets.GenerateKey())
	bad := write("bad.key", []byte("not a key!"))
	for _, tt := range []struct {
		name        string
		cfg         secrets.Config
		validateErr string
		loadErr     string
		keys        int
	}{
		{"none", secrets.Config{}, "", "no secrets key", 0},
		{"current only", secrets.Config{KeyFile: cur}, "", "", 1},
		{"with an old key", secrets.Config{KeyFile: cur, OldKeyFiles: []string{old}}, "", "", 2},
		{"old without current", secrets.Config{OldKeyFiles: []string{old}}, "needs -secrets-key-file", "", 0},
		{"old is current", secrets.Config{KeyFile: cur, OldKeyFiles: []string{cur}}, "given twice", "", 0},
		{"missing file", secrets.Config{KeyFile: filepath.Join(dir, "absent")}, "", "no such file", 0},
		{"bad file", secrets.Config{KeyFile: bad}, "", "bad.key: not base64", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.validateErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.validateErr) {
					t.Fatalf("validate: %v, want %q", err, tt.validateErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			kr, err := tt.cfg.Load(nil)
			if tt.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.loadErr) {
					t.Fatalf("load: %v, want %q", err, tt.loadErr)
				}
				return
			}
			if err != nil || len(kr.IDs()) != tt.keys {
				t.Fatalf("load: %v, %v", kr, err)
			}
		})
	}
}

// FuzzOpen: whatever is stored where a sealed value should be, Open
// refuses it without panicking (only Seal's output opens).
func FuzzOpen(f *testing.F) {
	kr := secrets.NewKeyring(newKey(f, 7))
	f.Add(kr.Seal("n", []byte("secret")))
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if plain, err := kr.Open("n", b); err == nil && !bytes.Equal(plain, []byte("secret")) {
			t.Fatalf("opened %q", plain)
		}
	})
}

// FuzzParseKey: a key file holding anything is refused or gives a key.
func FuzzParseKey(f *testing.F) {
	f.Add(secrets.GenerateKey())
	f.Add([]byte("c2hvcnQ="))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = secrets.ParseKey(b)
	})
}
