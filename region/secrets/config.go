package secrets

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/rackplane/rackplane/internal/flagenv"
)

// Config says where the region's secrets keys are. Files, not values:
// a key in a flag shows in ps, and one in the environment in
// /proc/<pid>/environ and `docker inspect`; a file can be mode 0600, a
// Docker or Kubernetes secret, or a systemd credential.
type Config struct {
	// KeyFile holds the key new secrets are sealed with.
	KeyFile string
	// OldKeyFiles hold keys accepted for opening only: the keys being
	// rotated away from (or, while several regions change over, the next
	// key).
	OldKeyFiles []string
}

// DefaultConfig returns the defaults: no key, which the region refuses to
// start with.
func DefaultConfig() Config { return Config{} }

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.KeyFile, "secrets-key-file", c.KeyFile, "file holding the key secrets (licence keys) are sealed with in PostgreSQL: the base64 of 32 random bytes (regiond secrets generate FILE, or openssl rand -base64 32); required")
	fs.Func("secrets-old-key-files", "comma separated files of keys accepted for opening secrets only, while rotating: what is sealed under them is re-sealed with -secrets-key-file at start", flagenv.List(&c.OldKeyFiles))
}

// Validate reports every problem of c at once. A missing key file is not
// one: commands that touch no secret run without it, and Load says what
// to do.
func (c Config) Validate() error {
	var errs []error
	if c.KeyFile == "" && len(c.OldKeyFiles) > 0 {
		errs = append(errs, errors.New("-secrets-old-key-files needs -secrets-key-file: the key to re-seal with"))
	}
	seen := map[string]bool{filepath.Clean(c.KeyFile): c.KeyFile != ""}
	for _, f := range c.OldKeyFiles {
		if seen[filepath.Clean(f)] {
			errs = append(errs, fmt.Errorf("-secrets-old-key-files: %s is given twice, or is also -secrets-key-file", f))
		}
		seen[filepath.Clean(f)] = true
	}
	return errors.Join(errs...)
}

// ErrNoKey is Load's error when no key file is configured.
var ErrNoKey = errors.New("no secrets key: give -secrets-key-file (or RACKPLANE_SECRETS_KEY_FILE), a file holding the base64 of 32 random bytes; regiond secrets generate FILE makes one")

// Load reads the key files into a keyring. A key file others may read is
// logged as a warning.
func (c Config) Load(log *slog.Logger) (*Keyring, error) {
	if c.KeyFile == "" {
		return nil, ErrNoKey
	}
	current, err := LoadKeyFile(c.KeyFile, log)
	if err != nil {
		return nil, err
	}
	var old []*Key
	for _, f := range c.OldKeyFiles {
		k, err := LoadKeyFile(f, log)
		if err != nil {
			return nil, err
		}
		if k.id == current.id {
			return nil, fmt.Errorf("-secrets-old-key-files: %s holds the same key as -secrets-key-file", f)
		}
		old = append(old, k)
	}
	return NewKeyring(current, old...), nil
}

// LoadKeyFile reads the key in path.
func LoadKeyFile(path string, log *slog.Logger) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("secrets key %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 && log != nil {
		log.Warn("the secrets key file can be read by others than its owner: chmod 600 it", "path", path, "mode", fmt.Sprintf("%#o", st.Mode().Perm()))
	}
	return k, nil
}

// EnsureKeyFile returns the key in path, writing a new one there (mode
// 0600, its directory made 0700 if missing) when there is no file. It
// reports whether it made one.
func EnsureKeyFile(path string, log *slog.Logger) (*Key, bool, error) {
	if _, err := os.Stat(path); err == nil {
		k, err := LoadKeyFile(path, log)
		return k, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("secrets key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("secrets key: %w", err)
	}
	text := GenerateKey()
	// Written aside, then linked into place: two starts at once never see
	// a half-written key, and the second keeps the first's key rather than
	// replacing it (which would leave what the first sealed unreadable).
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return nil, false, fmt.Errorf("secrets key: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if errors.Is(err, fs.ErrExist) {
		k, err := LoadKeyFile(path, log)
		return k, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("secrets key %s: %w", path, err)
	}
	k, err := ParseKey(text)
	return k, err == nil, err
}
