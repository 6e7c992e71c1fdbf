// Package secrets seals the secrets the region keeps in PostgreSQL
// (licence keys; BMC credentials next) under a key the operator provides,
// and fingerprints them with a key derived from it.
//
// The secrets key is 32 random bytes, kept base64-encoded in a file
// (-secrets-key-file; `regiond secrets generate FILE` or
// `openssl rand -base64 32` makes one; `rackplane dev` makes its own in its
// data directory). Nothing derived from it is stored: the database alone,
// or a dump of it, opens no secret.
//
// From the key, HKDF-SHA256 derives three things, each with its own
// label: the AES-256-GCM key that seals, the HMAC-SHA256 key of
// fingerprints, and an 8-byte key id. A sealed value is
//
//	version (1) | key id (8) | nonce (12) | ciphertext | GCM tag (16)
//
// with the version, the key id and the secret's name (such as
// "licence_key/windows/win2022") as additional data, so a value copied
// under another name, or with its header altered, does not open.
//
// The key id in each value is what makes rotation possible: a Keyring
// seals with its current key and opens with any key it was given, so a
// region started with the new key as current and the old one as an old
// key reads everything, and re-seals what it finds under the old key
// (postgres.DB.ResealSecrets, at every start and with
// `regiond secrets reseal`). Once nothing is left under the old key the
// old key can go.
//
// Fingerprints are keyed so that the event log, the audit log and the API
// can say whether two secrets are the same without letting anyone who
// reads them test guesses offline (a bare SHA-256 of a short password is
// as good as the password). They are made with the current key: after a
// rotation the same secret has another fingerprint, and re-sealing
// updates the stored ones.
package secrets
