package keyfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rackplane/rackplane"
)

// LoadOrCreate returns the size-byte key in path, creating the file with
// a random key when there is none. A file of another size is refused
// rather than replaced: what was sealed or derived with it would be lost
// without anyone deciding so.
func LoadOrCreate(path string, size int) ([]byte, error) {
	key, err := os.ReadFile(path)
	switch {
	case err == nil:
		if len(key) != size {
			return nil, rackplane.Errorf(rackplane.EINVALID, "key file %s holds %d bytes, want %d; remove it to start with a new key", path, len(key), size)
		}
		return key, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("key directory: %w", err)
	}
	key = make([]byte, size)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return nil, fmt.Errorf("random key: %w", err)
	}
	// The key is written whole to a file of its own, then linked into
	// place: the link appears complete or not at all, and fails if
	// another process linked its key first. (Creating path itself with
	// O_EXCL and then writing left a moment in which a racing reader
	// found it empty and refused it.)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-*")
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create key: %w", err)
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write key: %w", err)
	}
	err = os.Link(tmp.Name(), path)
	if errors.Is(err, os.ErrExist) {
		// Another process made it first: use that one.
		return LoadOrCreate(path, size)
	}
	if err != nil {
		return nil, fmt.Errorf("create key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the link survives a crash
		d.Close()
	}
	return key, nil
}
