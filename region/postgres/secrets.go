package postgres

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/secrets"
)

// RegionSecret returns the region's secret called name, making it on first
// use. Every region instance sharing the database gets the same bytes, so a
// token one instance derives another can check. It is kept in clear: use
// it only for a pepper whose bytes alone let nobody act, such as the key
// join tokens are hashed under (the tokens are 32 random bytes: knowing
// the key and a hash does not give a token). A secret that does let its
// reader act is a SealedRegionSecret.
func (db *DB) RegionSecret(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, wrap("region secret", err)
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO region_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, wrap("region secret", err)
	}
	var secret []byte
	err := db.pool.QueryRow(ctx, `SELECT secret FROM region_secrets WHERE name = $1`, name).Scan(&secret)
	return secret, wrap("region secret", err)
}

// SealedRegionSecret returns the region's secret called name (32 random
// bytes, made on first use), kept sealed under kr in sealed_secrets as
// "region/<name>", so that a dump of the database does not hold it. Use it
// for a secret whose bytes would let a reader act, such as the one install
// status tokens derive from. One left in clear in region_secrets by an
// earlier version moves there (and keeps its bytes, so what was derived
// from it stays good). Every region sharing the database gets the same
// bytes; reseal and key rotation treat it as any sealed secret.
func (db *DB) SealedRegionSecret(ctx context.Context, kr *secrets.Keyring, name string) ([]byte, error) {
	full := "region/" + name
	for attempt := 0; ; attempt++ {
		plain, err := db.OpenSecret(ctx, kr, full)
		if err == nil {
			secret, derr := base64.StdEncoding.DecodeString(string(plain))
			if derr != nil {
				return nil, rackplane.WrapError(rackplane.EUNAVAILABLE, derr, "secret %s is damaged", full)
			}
			return secret, nil
		}
		if rackplane.ErrorCode(err) != rackplane.ENOTFOUND || attempt > 0 {
			return nil, err
		}
		err = db.InTx(ctx, func(tx pgx.Tx) error {
			var secret []byte
			err := tx.QueryRow(ctx, `DELETE FROM region_secrets WHERE name = $1 RETURNING secret`, name).Scan(&secret)
			if errors.Is(err, pgx.ErrNoRows) {
				secret = make([]byte, 32)
				if _, err := rand.Read(secret); err != nil {
					return err
				}
			} else if err != nil {
				return wrap("region secret", err)
			}
			// Another region may have made it meanwhile: theirs stands,
			// and the next read returns it.
			sealed := kr.SealSecret(full, []byte(base64.StdEncoding.EncodeToString(secret)))
			_, err = tx.Exec(ctx, `INSERT INTO sealed_secrets (name, sealed, key_id, unsealed, fingerprint, updated_at)
				VALUES ($1, $2, $3, NULL, $4, now()) ON CONFLICT (name) DO NOTHING`,
				sealed.Name, sealed.Sealed, sealed.KeyID, sealed.Fingerprint)
			return wrap("region secret", err)
		})
		if err != nil {
			return nil, err
		}
	}
}

// putSecret stores s (sealed_secrets), replacing what was under its name.
func putSecret(ctx context.Context, tx pgx.Tx, s secrets.Secret, at time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO sealed_secrets (name, sealed, key_id, unsealed, fingerprint, updated_at)
		VALUES ($1, $2, $3, NULL, $4, $5)
		ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, key_id = excluded.key_id, unsealed = NULL,
			fingerprint = excluded.fingerprint, updated_at = excluded.updated_at`,
		s.Name, s.Sealed, s.KeyID, s.Fingerprint, at)
	return wrap("store secret "+s.Name, err)
}

// OpenSecret returns the secret stored under name, opened with kr:
// ENOTFOUND when there is none, EUNAVAILABLE when kr cannot open it (a
// key the region was not given, or an altered value).
func (db *DB) OpenSecret(ctx context.Context, kr *secrets.Keyring, name string) ([]byte, error) {
	var sealed []byte
	var unsealed *string
	err := db.pool.QueryRow(ctx, `SELECT sealed, unsealed FROM sealed_secrets WHERE name = $1`, name).Scan(&sealed, &unsealed)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rackplane.Errorf(rackplane.ENOTFOUND, "no secret %s", name)
	}
	if err != nil {
		return nil, wrap("secret "+name, err)
	}
	if unsealed != nil {
		// Left by the migration and not sealed yet: the region seals
		// such values before it serves anything.
		return []byte(*unsealed), nil
	}
	plain, err := kr.Open(name, sealed)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "secret %s cannot be opened", name)
	}
	return plain, nil
}

// ResealReport is what ResealSecrets did.
type ResealReport struct {
	// Current were sealed under the current key already.
	Current int
	// Resealed were under an old key the keyring has, and are now under
	// the current one.
	Resealed int
	// Sealed were left unsealed by the migration from clear storage.
	Sealed int
	// Unreadable are under a key the keyring lacks, or do not open;
	// UnreadableKeys are those keys' ids.
	Unreadable     int
	UnreadableKeys []string
}

// ResealSecrets seals with kr's current key every secret that is not
// under it: those the migration left unsealed and those under an old key
// of kr, with fingerprints made again under the current key. What kr
// cannot open stays as it is and is counted. It runs in one transaction
// and may run at once in several regions.
func (db *DB) ResealSecrets(ctx context.Context, kr *secrets.Keyring, now time.Time) (ResealReport, error) {
	var rep ResealReport
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		rep = ResealReport{}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM sealed_secrets WHERE key_id = $1`, kr.CurrentID()).Scan(&rep.Current); err != nil {
			return wrap("reseal secrets", err)
		}
		rows, err := tx.Query(ctx, `SELECT name, sealed, unsealed FROM sealed_secrets
			WHERE key_id IS DISTINCT FROM $1 ORDER BY name FOR UPDATE`, kr.CurrentID())
		if err != nil {
			return wrap("reseal secrets", err)
		}
		type row struct {
			name     string
			sealed   []byte
			unsealed *string
		}
		todo, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
			var x row
			return x, r.Scan(&x.name, &x.sealed, &x.unsealed)
		})
		if err != nil {
			return wrap("reseal secrets", err)
		}
		unknown := map[string]bool{}
		for _, r := range todo {
			var plain []byte
			if r.unsealed != nil {
				plain = []byte(*r.unsealed)
				rep.Sealed++
			} else if plain, err = kr.Open(r.name, r.sealed); err != nil {
				rep.Unreadable++
				if id, err := secrets.KeyID(r.sealed); err == nil && !unknown[id] {
					unknown[id] = true
					rep.UnreadableKeys = append(rep.UnreadableKeys, id)
				}
				continue
			} else {
				rep.Resealed++
			}
			if err := putSecret(ctx, tx, kr.SealSecret(r.name, plain), now); err != nil {
				return err
			}
		}
		return nil
	})
	return rep, err
}
