package machinecred

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"path/filepath"

	"github.com/rackplane/rackplane/internal/keyfile"
)

// KeyFile is the file in the rack's data directory holding the key.
const KeyFile = "machine-credential.key"

// Keyring derives and checks credentials with one rack's key.
type Keyring struct {
	key []byte
}

// Open opens the key in dataDir, creating it on first use.
func Open(dataDir string) (*Keyring, error) {
	key, err := keyfile.LoadOrCreate(filepath.Join(dataDir, KeyFile), 32)
	if err != nil {
		return nil, fmt.Errorf("machine credentials: %w", err)
	}
	return &Keyring{key: key}, nil
}

// New returns a keyring with key (at least 32 bytes).
func New(key []byte) (*Keyring, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("machine credentials: a key of %d bytes is too short, want 32", len(key))
	}
	return &Keyring{key: append([]byte(nil), key...)}, nil
}

// For returns the credential of machineID's deployment deploymentID: 43
// characters of URL-safe base64, fit for a path element and a kernel
// parameter.
func (k *Keyring) For(machineID, deploymentID string) string {
	return base64.RawURLEncoding.EncodeToString(k.sum(machineID, deploymentID))
}

// Check reports whether credential is the one of machineID's deployment
// deploymentID, in time independent of where they differ.
func (k *Keyring) Check(machineID, deploymentID, credential string) bool {
	if machineID == "" || deploymentID == "" {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(credential)
	if err != nil {
		return false
	}
	return hmac.Equal(got, k.sum(machineID, deploymentID))
}

func (k *Keyring) sum(machineID, deploymentID string) []byte {
	m := hmac.New(sha256.New, k.key)
	// Domain-separated, and each field prefixed with its length: no
	// (machine, deployment) pair can be made to read as another, whatever
	// bytes they hold.
	m.Write([]byte("rackplane machine credential v1"))
	for _, f := range []string{machineID, deploymentID} {
		m.Write(binary.BigEndian.AppendUint64(nil, uint64(len(f))))
		m.Write([]byte(f))
	}
	return m.Sum(nil)
}
