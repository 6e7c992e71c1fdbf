package postgres

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// JoinToken is a join token as listed (never with its secret).
type JoinToken struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	// Racks is how many racks joined with it.
	Racks int `json:"racks"`
}

// RackCredential is the nkey a rack is bound to on NATS.
type RackCredential struct {
	RackID      string     `json:"rack_id"`
	NKey        string     `json:"nkey"`
	JoinedAt    time.Time  `json:"joined_at"`
	JoinTokenID *string    `json:"join_token_id"`
	RevokedAt   *time.Time `json:"revoked_at"`
	RevokedBy   *string    `json:"revoked_by"`
}

// joinTokenPrefix marks join tokens, as tokenPrefix marks API tokens, and
// tells the two apart: one is never taken for the other.
const joinTokenPrefix = "rpj_"

// joinTokenKey names the region secret join token secrets are hashed
// under: a copy of the table alone does not let anyone test guesses.
const joinTokenKey = "join-token-hmac"

// MaxJoinTokenTTL bounds a join token's life: a token is for joining
// racks now, not a standing credential.
const MaxJoinTokenTTL = 366 * 24 * time.Hour

// CreateJoinToken makes a join token valid for ttl and returns it with its
// secret form, "rpj_<id>_<secret>", which is shown this once and stored
// only as a keyed hash.
func (db *DB) CreateJoinToken(ctx context.Context, ttl time.Duration, createdBy string, now time.Time) (JoinToken, string, error) {
	key, err := db.joinTokenKey(ctx, ttl, createdBy)
	if err != nil {
		return JoinToken{}, "", err
	}
	var t JoinToken
	var plain string
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		t, plain, err = db.createJoinToken(ctx, tx, key, ttl, createdBy, now)
		return err
	})
	return t, plain, err
}

// joinTokenKey checks a new token's settings and returns the key its
// secret is hashed under. It is read before the transaction that uses
// it: RegionSecret takes a connection of its own, and transactions that
// each held one while waiting for another could take the whole pool.
func (db *DB) joinTokenKey(ctx context.Context, ttl time.Duration, createdBy string) ([]byte, error) {
	if ttl < time.Minute || ttl > MaxJoinTokenTTL {
		return nil, rackplane.Errorf(rackplane.EINVALID, "a join token lives 1m to %s, not %s", MaxJoinTokenTTL, ttl)
	}
	if createdBy == "" || len(createdBy) > 128 {
		return nil, rackplane.Errorf(rackplane.EINVALID, "who creates a join token must be 1 to 128 characters")
	}
	return db.RegionSecret(ctx, joinTokenKey)
}

func (db *DB) createJoinToken(ctx context.Context, tx pgx.Tx, key []byte, ttl time.Duration, createdBy string, now time.Time) (JoinToken, string, error) {
	id := uuid.New()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return JoinToken{}, "", err
	}
	plain := joinTokenPrefix + strings.ReplaceAll(id.String(), "-", "") + "_" + hex.EncodeToString(secret)
	now = now.UTC().Truncate(time.Microsecond)
	t := JoinToken{ID: id.String(), CreatedAt: now, CreatedBy: createdBy, ExpiresAt: now.Add(ttl)}
	ev, err := events.New(events.RegionSource, events.TypeJoinTokenCreated, events.JoinTokenStreamName(t.ID), now,
		events.JoinTokenChanged{JoinTokenID: t.ID, ExpiresAt: t.ExpiresAt})
	if err != nil {
		return JoinToken{}, "", err
	}
	ev.Actor = createdBy
	if _, err := tx.Exec(ctx, `INSERT INTO join_tokens (id, secret_hash, created_at, expires_at, created_by)
		VALUES ($1, $2, $3, $4, $5)`, t.ID, joinTokenHash(key, secret), t.CreatedAt, t.ExpiresAt, createdBy); err != nil {
		return JoinToken{}, "", wrap("create join token", err)
	}
	if _, err := db.Emit(ctx, tx, ev.Subject, ExpectNoStream, ev); err != nil {
		return JoinToken{}, "", err
	}
	return t, plain, nil
}

// CreateFirstJoinToken makes a join token valid for ttl when none was
// ever made, so that a new installation has one to join its first racks
// with; created is false, and no secret is returned, when one exists (or
// existed: expired and revoked tokens count, so the region hands out a
// first token only once). Regions starting together make one between them.
func (db *DB) CreateFirstJoinToken(ctx context.Context, ttl time.Duration, createdBy string, now time.Time) (t JoinToken, plain string, created bool, err error) {
	key, err := db.joinTokenKey(ctx, ttl, createdBy)
	if err != nil {
		return JoinToken{}, "", false, err
	}
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE join_tokens IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return wrap("first join token: lock", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM join_tokens)`).Scan(&exists); err != nil {
			return wrap("first join token", err)
		}
		if exists {
			return nil
		}
		t, plain, err = db.createJoinToken(ctx, tx, key, ttl, createdBy, now)
		created = err == nil
		return err
	})
	return t, plain, created, err
}

// ListJoinTokens returns every join token, newest first.
func (db *DB) ListJoinTokens(ctx context.Context) ([]JoinToken, error) {
	rows, err := db.pool.Query(ctx, `SELECT t.id::text, t.created_at, t.created_by, t.expires_at, t.revoked_at,
			(SELECT count(*) FROM rack_credentials c WHERE c.join_token_id = t.id)
		FROM join_tokens t ORDER BY t.created_at DESC`)
	if err != nil {
		return nil, wrap("list join tokens", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (JoinToken, error) {
		var t JoinToken
		err := row.Scan(&t.ID, &t.CreatedAt, &t.CreatedBy, &t.ExpiresAt, &t.RevokedAt, &t.Racks)
		return t, err
	})
	return out, wrap("list join tokens", err)
}

// RevokeJoinToken revokes a join token; revoking a revoked one is a
// no-op. Racks that joined with it stay joined.
func (db *DB) RevokeJoinToken(ctx context.Context, id, by string, now time.Time) (JoinToken, error) {
	if _, err := uuid.Parse(id); err != nil {
		return JoinToken{}, rackplane.Errorf(rackplane.EINVALID, "join token id %q is not a UUID", id)
	}
	var t JoinToken
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		var was *time.Time
		err := tx.QueryRow(ctx, `SELECT revoked_at FROM join_tokens WHERE id = $1 FOR UPDATE`, id).Scan(&was)
		if errors.Is(err, pgx.ErrNoRows) {
			return rackplane.Errorf(rackplane.ENOTFOUND, "no join token %s", id)
		}
		if err != nil {
			return wrap("revoke join token", err)
		}
		err = tx.QueryRow(ctx, `UPDATE join_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
			RETURNING id::text, created_at, created_by, expires_at, revoked_at,
				(SELECT count(*) FROM rack_credentials c WHERE c.join_token_id = $1)`, id, now).
			Scan(&t.ID, &t.CreatedAt, &t.CreatedBy, &t.ExpiresAt, &t.RevokedAt, &t.Racks)
		if err != nil {
			return wrap("revoke join token", err)
		}
		if was != nil {
			return nil
		}
		ev, err := events.New(events.RegionSource, events.TypeJoinTokenRevoked, events.JoinTokenStreamName(t.ID), now,
			events.JoinTokenChanged{JoinTokenID: t.ID, ExpiresAt: t.ExpiresAt})
		if err != nil {
			return err
		}
		ev.Actor = by
		_, err = db.Emit(ctx, tx, ev.Subject, ExpectAny, ev)
		return err
	})
	return t, err
}

// JoinTokenValid tells whether plain is a join token a rack could join
// with now (for a caller keeping one in a file, which makes a new one when
// it no longer works). It records nothing.
func (db *DB) JoinTokenValid(ctx context.Context, plain string, now time.Time) (bool, error) {
	key, err := db.RegionSecret(ctx, joinTokenKey)
	if err != nil {
		return false, err
	}
	_, err = checkJoinToken(ctx, db.pool, key, plain, now)
	var refused *RackRefused
	if errors.As(err, &refused) {
		return false, nil
	}
	return err == nil, err
}

// Why a rack's connection is refused; the words are metric labels.
const (
	RefusedRevoked      = "rack_revoked"
	RefusedKeyMismatch  = "key_mismatch"
	RefusedNoJoinToken  = "no_join_token"
	RefusedBadJoinToken = "bad_join_token"
	RefusedExpiredToken = "expired_join_token"
	RefusedRevokedToken = "revoked_join_token"
)

// RackRefused is AdmitRack's answer to a connection it refuses.
type RackRefused struct {
	Reason string // one of the Refused constants
}

func (e *RackRefused) Error() string { return "rack refused: " + e.Reason }

// AdmitRack decides a rack's connection to NATS: rack rackID connecting
// with nkey (whose signature the caller verified) and, maybe, a join
// token. A rack bound to nkey and not revoked is admitted; a rack not
// bound yet is admitted with a valid join token, and bound to nkey from
// then on (rack_joined). Anything else is a *RackRefused saying why.
// joined reports a new binding.
func (db *DB) AdmitRack(ctx context.Context, rackID, nkey, joinToken string, now time.Time) (joined bool, err error) {
	// Read before the transaction (see joinTokenKey); bound racks, which
	// send no token, need none.
	var key []byte
	if joinToken != "" {
		if key, err = db.RegionSecret(ctx, joinTokenKey); err != nil {
			return false, err
		}
	}
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		joined = false
		if done, err := checkBound(ctx, tx, rackID, nkey); done || err != nil {
			return err
		}
		if joinToken == "" {
			return &RackRefused{Reason: RefusedNoJoinToken}
		}
		tokenID, err := checkJoinToken(ctx, tx, key, joinToken, now)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO rack_credentials (rack_id, nkey, joined_at, join_token_id)
			VALUES ($1, $2, $3, $4) ON CONFLICT (rack_id) DO NOTHING`, rackID, nkey, now, tokenID)
		if err != nil {
			return wrap("admit rack", err)
		}
		if tag.RowsAffected() == 0 {
			// Another connection of this id bound it first (it committed
			// while this one waited on the row): its key decides.
			_, err := checkBound(ctx, tx, rackID, nkey)
			return err
		}
		ev, err := events.New(events.RegionSource, events.TypeRackJoined, events.RackStreamName(rackID), now,
			events.RackCredential{RackID: rackID, NKey: nkey, JoinTokenID: tokenID})
		if err != nil {
			return err
		}
		ev.Actor = "rack:" + rackID
		if _, err := db.Emit(ctx, tx, ev.Subject, ExpectAny, ev); err != nil {
			return err
		}
		joined = true
		return nil
	})
	return joined, err
}

// checkBound looks rackID's binding up: done when there is one, with a
// *RackRefused when it is revoked or for another key.
func checkBound(ctx context.Context, tx pgx.Tx, rackID, nkey string) (done bool, err error) {
	var bound string
	var revoked *time.Time
	err = tx.QueryRow(ctx, `SELECT nkey, revoked_at FROM rack_credentials WHERE rack_id = $1`, rackID).Scan(&bound, &revoked)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return true, wrap("admit rack", err)
	case revoked != nil:
		return true, &RackRefused{Reason: RefusedRevoked}
	case bound != nkey:
		return true, &RackRefused{Reason: RefusedKeyMismatch}
	}
	return true, nil
}

// querier is what checkJoinToken reads through: the pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// checkJoinToken returns the id of join token plain when a rack may join
// with it now; a *RackRefused otherwise. An unknown id costs the same
// hash and comparison as a wrong secret, so ids cannot be told apart by
// timing.
func checkJoinToken(ctx context.Context, q querier, key []byte, plain string, now time.Time) (string, error) {
	bad := &RackRefused{Reason: RefusedBadJoinToken}
	rest, ok := strings.CutPrefix(plain, joinTokenPrefix)
	idHex, secretHex, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || len(idHex) != 32 || len(secretHex) != 64 {
		return "", bad
	}
	id, err := uuid.Parse(idHex)
	secret, err2 := hex.DecodeString(secretHex)
	if err != nil || err2 != nil {
		return "", bad
	}
	var hash []byte
	var expires time.Time
	var revoked *time.Time
	err = q.QueryRow(ctx, `SELECT secret_hash, expires_at, revoked_at FROM join_tokens WHERE id = $1`, id).Scan(&hash, &expires, &revoked)
	found := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", wrap("check join token", err)
	}
	if !found {
		hash = make([]byte, sha256.Size)
	}
	if !hmac.Equal(joinTokenHash(key, secret), hash) || !found {
		return "", bad
	}
	if revoked != nil {
		return "", &RackRefused{Reason: RefusedRevokedToken}
	}
	if !now.Before(expires) {
		return "", &RackRefused{Reason: RefusedExpiredToken}
	}
	return id.String(), nil
}

func joinTokenHash(key, secret []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(secret)
	return m.Sum(nil)
}

// RevokeRack revokes rack rackID's NATS credential for good: the auth
// callout refuses its connections from now on (whoever disconnects the
// ones it has). Revoking a revoked rack is a no-op; a rack that never
// joined is ENOTFOUND.
func (db *DB) RevokeRack(ctx context.Context, rackID, by string, now time.Time) (RackCredential, error) {
	if _, err := uuid.Parse(rackID); err != nil {
		return RackCredential{}, rackplane.Errorf(rackplane.EINVALID, "rack id %q is not a UUID", rackID)
	}
	var c RackCredential
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		var found bool
		var ev *events.Event
		var err error
		c, found, ev, err = revokeCredential(ctx, tx, rackID, by, now)
		if err != nil || ev == nil {
			if err == nil && !found {
				err = rackplane.Errorf(rackplane.ENOTFOUND, "rack %s never joined through the NATS auth callout", rackID)
			}
			return err
		}
		_, err = db.Emit(ctx, tx, ev.Subject, ExpectAny, *ev)
		return err
	})
	return c, err
}

// revokeCredential marks rack rackID's credential revoked within tx and
// returns it (found false: the rack never joined through the callout),
// with the rack_revoked event for the caller to emit; ev is nil when there
// is nothing new to say (no credential, or revoked before).
func revokeCredential(ctx context.Context, tx pgx.Tx, rackID, by string, now time.Time) (c RackCredential, found bool, ev *events.Event, err error) {
	var was *time.Time
	err = tx.QueryRow(ctx, `SELECT revoked_at FROM rack_credentials WHERE rack_id = $1 FOR UPDATE`, rackID).Scan(&was)
	if errors.Is(err, pgx.ErrNoRows) {
		return c, false, nil, nil
	}
	if err != nil {
		return c, false, nil, wrap("revoke rack", err)
	}
	err = tx.QueryRow(ctx, `UPDATE rack_credentials SET revoked_at = coalesce(revoked_at, $2), revoked_by = coalesce(revoked_by, $3)
		WHERE rack_id = $1 RETURNING `+rackCredentialColumns, rackID, now, by).
		Scan(&c.RackID, &c.NKey, &c.JoinedAt, &c.JoinTokenID, &c.RevokedAt, &c.RevokedBy)
	if err != nil {
		return c, true, nil, wrap("revoke rack", err)
	}
	if was != nil {
		return c, true, nil, nil
	}
	data := events.RackCredential{RackID: c.RackID, NKey: c.NKey}
	if c.JoinTokenID != nil {
		data.JoinTokenID = *c.JoinTokenID
	}
	e, err := events.New(events.RegionSource, events.TypeRackRevoked, events.RackStreamName(rackID), now, data)
	if err != nil {
		return c, true, nil, err
	}
	e.Actor = by
	return c, true, &e, nil
}

const rackCredentialColumns = `rack_id::text, nkey, joined_at, join_token_id::text, revoked_at, revoked_by`

// GetRackCredential returns the nkey rack rackID is bound to; ENOTFOUND
// when it never joined through the auth callout.
func (db *DB) GetRackCredential(ctx context.Context, rackID string) (RackCredential, error) {
	if _, err := uuid.Parse(rackID); err != nil {
		return RackCredential{}, rackplane.Errorf(rackplane.EINVALID, "rack id %q is not a UUID", rackID)
	}
	var c RackCredential
	err := db.pool.QueryRow(ctx, `SELECT `+rackCredentialColumns+` FROM rack_credentials WHERE rack_id = $1`, rackID).
		Scan(&c.RackID, &c.NKey, &c.JoinedAt, &c.JoinTokenID, &c.RevokedAt, &c.RevokedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return RackCredential{}, rackplane.Errorf(rackplane.ENOTFOUND, "rack %s never joined through the NATS auth callout", rackID)
	}
	return c, wrap(fmt.Sprintf("rack %s credential", rackID), err)
}
