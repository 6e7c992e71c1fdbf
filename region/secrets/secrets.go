package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of a secrets key in bytes.
const KeySize = 32

// version is the first byte of every sealed value.
const version = 1

const (
	idSize    = 8
	nonceSize = 12
	headSize  = 1 + idSize + nonceSize
	tagSize   = 16
)

// Labels of what HKDF derives from the key; changing one changes every
// sealed value and fingerprint.
const (
	labelSeal        = "rackplane secrets aes-256-gcm v1"
	labelFingerprint = "rackplane secrets fingerprint hmac-sha256 v1"
	labelID          = "rackplane secrets key id v1"
)

// Key is one secrets key with what is derived from it.
type Key struct {
	id   [idSize]byte
	aead cipher.AEAD
	fp   []byte
}

// NewKey derives a Key from 32 bytes of key material.
func NewKey(material []byte) (*Key, error) {
	if len(material) != KeySize {
		return nil, fmt.Errorf("a secrets key is %d bytes, not %d", KeySize, len(material))
	}
	derive := func(label string) []byte {
		// HKDF-SHA256 with a 32-byte output cannot fail.
		b, err := hkdf.Key(sha256.New, material, nil, label, KeySize)
		if err != nil {
			panic(err)
		}
		return b
	}
	block, err := aes.NewCipher(derive(labelSeal))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Key{aead: aead, fp: derive(labelFingerprint)}
	copy(k.id[:], derive(labelID))
	return k, nil
}

// ParseKey reads a key as a key file holds it: the base64 of 32 bytes,
// surrounding white space ignored.
func ParseKey(text []byte) (*Key, error) {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return nil, errors.New("no key in it: want the base64 of 32 random bytes (openssl rand -base64 32)")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64: want the base64 of 32 random bytes (openssl rand -base64 32)")
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("%d bytes; want %d (openssl rand -base64 32)", len(b), KeySize)
	}
	return NewKey(b)
}

// GenerateKey returns the text of a new key file.
func GenerateKey() []byte {
	b := make([]byte, KeySize)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return []byte(base64.StdEncoding.EncodeToString(b) + "\n")
}

// ID is the key's id as sealed values carry it, in hex.
func (k *Key) ID() string { return hex.EncodeToString(k.id[:]) }

// Keyring seals with its current key and opens with any of its keys.
type Keyring struct {
	current *Key
	byID    map[[idSize]byte]*Key
}

// NewKeyring returns a keyring sealing with current and opening with it
// and old (keys being rotated away from, or, while several regions change
// over, the next key).
func NewKeyring(current *Key, old ...*Key) *Keyring {
	kr := &Keyring{current: current, byID: map[[idSize]byte]*Key{current.id: current}}
	for _, k := range old {
		if _, dup := kr.byID[k.id]; !dup {
			kr.byID[k.id] = k
		}
	}
	return kr
}

// CurrentID is the id of the key new values are sealed with.
func (kr *Keyring) CurrentID() string { return kr.current.ID() }

// IDs returns the ids of every key the keyring opens with, current first.
func (kr *Keyring) IDs() []string {
	out := []string{kr.current.ID()}
	for id, k := range kr.byID {
		if id != kr.current.id {
			out = append(out, k.ID())
		}
	}
	return out
}

// Seal encrypts plaintext under the current key, bound to name.
func (kr *Keyring) Seal(name string, plaintext []byte) []byte {
	k := kr.current
	out := make([]byte, headSize, headSize+len(plaintext)+tagSize)
	out[0] = version
	copy(out[1:], k.id[:])
	_, _ = rand.Read(out[1+idSize : headSize]) // crypto/rand.Read never fails
	return k.aead.Seal(out, out[1+idSize:headSize], plaintext, additional(out[:1+idSize], name))
}

// ErrUnknownKey is returned by Open for a value sealed under a key the
// keyring does not have.
var ErrUnknownKey = errors.New("sealed under a key this region was not given")

// Open decrypts a value Seal made under name with any of the keyring's
// keys. A value that was altered, truncated or sealed under another name
// is refused; one sealed under a key the keyring lacks is ErrUnknownKey.
func (kr *Keyring) Open(name string, sealed []byte) ([]byte, error) {
	id, err := KeyID(sealed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	k, ok := kr.byID[[idSize]byte(sealed[1:1+idSize])]
	if !ok {
		return nil, fmt.Errorf("%s: key %s: %w", name, id, ErrUnknownKey)
	}
	if len(sealed) < headSize+tagSize {
		return nil, fmt.Errorf("%s: sealed value too short", name)
	}
	plain, err := k.aead.Open(nil, sealed[1+idSize:headSize], sealed[headSize:], additional(sealed[:1+idSize], name))
	if err != nil {
		return nil, fmt.Errorf("%s: does not open under key %s: altered, or sealed under another name", name, id)
	}
	return plain, nil
}

// KeyID returns the id of the key value was sealed under.
func KeyID(sealed []byte) (string, error) {
	if len(sealed) < 1+idSize {
		return "", errors.New("sealed value too short")
	}
	if sealed[0] != version {
		return "", fmt.Errorf("sealed value of unknown version %d", sealed[0])
	}
	return hex.EncodeToString(sealed[1 : 1+idSize]), nil
}

// Current reports whether sealed is under the current key.
func (kr *Keyring) Current(sealed []byte) bool {
	return len(sealed) >= 1+idSize && sealed[0] == version && bytes.Equal(sealed[1:1+idSize], kr.current.id[:])
}

// Has reports whether the keyring holds the key with id.
func (kr *Keyring) Has(id string) bool {
	var raw [idSize]byte
	if n, err := hex.Decode(raw[:], []byte(id)); err != nil || n != idSize {
		return false
	}
	_, ok := kr.byID[raw]
	return ok
}

func additional(head []byte, name string) []byte {
	return append(append([]byte{}, head...), name...)
}

// Fingerprint is the keyed fingerprint of a secret of kind (such as
// "licence_key"): the hex HMAC-SHA256 of kind and value under the current
// key's fingerprint key. Equal secrets of a kind have equal fingerprints
// under one key; without the key a fingerprint tells nothing about the
// secret, and guesses cannot be checked against it.
func (kr *Keyring) Fingerprint(kind string, value []byte) string {
	m := hmac.New(sha256.New, kr.current.fp)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write(value)
	return hex.EncodeToString(m.Sum(nil))
}

// Kind is the kind of a secret's name: what comes before its first "/".
func Kind(name string) string {
	kind, _, _ := strings.Cut(name, "/")
	return kind
}

// Secret is a secret ready to be stored: sealed under its name, with the
// id of the key that sealed it and its keyed fingerprint.
type Secret struct {
	Name        string
	Sealed      []byte
	KeyID       string
	Fingerprint string
}

// SealSecret seals plaintext under name with the current key, and
// fingerprints it as a secret of name's Kind.
func (kr *Keyring) SealSecret(name string, plaintext []byte) Secret {
	return Secret{Name: name, Sealed: kr.Seal(name, plaintext), KeyID: kr.current.ID(),
		Fingerprint: kr.Fingerprint(Kind(name), plaintext)}
}
