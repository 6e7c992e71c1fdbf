package dial

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// LoadOrCreateNKey reads the nkey seed in path, or makes a key with
// create (nkeys.CreateUser, nkeys.CreateAccount) and writes its seed
// there, 0600: it is a secret. The seed goes to a temp file renamed into
// place, so a crash leaves no half seed.
func LoadOrCreateNKey(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("nkey seed %s: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("nkey seed: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, fmt.Errorf("nkey seed %s: %w", path, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("nkey seed %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("nkey seed: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(seed, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("nkey seed: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("nkey seed: %w", err)
	}
	return kp, nil
}
