package rack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
)

// LoadOrCreateID returns the rack id kept in dataDir, creating it on first
// start. The id is what the region knows the rack by, so it must survive
// restarts; it is written to a temp file and renamed so a crash cannot
// leave a half-written one.
func LoadOrCreateID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "rack-id")
	b, err := os.ReadFile(path)
	if err == nil {
		id, perr := uuid.Parse(strings.TrimSpace(string(b)))
		if perr != nil {
			return "", fmt.Errorf("rack id file %s is corrupt (%v): remove it to make this a new rack", path, perr)
		}
		return id.String(), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read rack id: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	id := uuid.NewString()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write rack id: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write rack id: %w", err)
	}
	return id, nil
}
