package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Token is an API token as listed (never with its secret).
type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Actor     string     `json:"actor"`
	CreatedAt time.Time  `json:"created_at"`
	CreatedBy string     `json:"created_by"`
	RevokedAt *time.Time `json:"revoked_at"`
	// LastUsedAt is the latest use written (see TokenUses): up to
	// TokenUseFlushInterval behind the token's last request.
	LastUsedAt *time.Time `json:"last_used_at"`
}

// tokenPrefix marks Rackplane tokens so secret scanners and people can
// recognise them.
const tokenPrefix = "rp_"

// CreateToken makes a token for actor and returns it with its secret form,
// "rp_<id>_<secret>", which is shown this once and stored only hashed.
func (db *DB) CreateToken(ctx context.Context, name, actor, createdBy string, now time.Time) (Token, string, error) {
	if name == "" || len(name) > 128 || actor == "" || len(actor) > 128 {
		return Token{}, "", rackplane.Errorf(rackplane.EINVALID, "token name and actor must each be 1 to 128 characters")
	}
	id := uuid.New()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return Token{}, "", err
	}
	plain := tokenPrefix + strings.ReplaceAll(id.String(), "-", "") + "_" + hex.EncodeToString(secret)
	sum := sha256.Sum256(secret)
	t := Token{ID: id.String(), Name: name, Actor: actor, CreatedAt: now.UTC().Truncate(time.Microsecond), CreatedBy: createdBy}
	ev, err := events.New(events.RegionSource, events.TypeTokenCreated, events.TokenStreamName(t.ID), now,
		events.TokenChanged{TokenID: t.ID, Name: name, Actor: actor})
	if err != nil {
		return Token{}, "", err
	}
	ev.Actor = createdBy
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO api_tokens (id, name, actor, secret_hash, created_at, created_by)
			VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, name, actor, sum[:], t.CreatedAt, createdBy); err != nil {
			return wrap("create token", err)
		}
		_, err := db.Emit(ctx, tx, ev.Subject, ExpectNoStream, ev)
		return err
	})
	return t, plain, err
}

// Outcomes of a token check (rackplane_region_api_token_checks_total).
const (
	tokenAccepted    = "accepted"
	tokenMalformed   = "malformed"
	tokenUnknown     = "unknown_token"
	tokenWrongSecret = "wrong_secret"
	tokenRevoked     = "revoked"
)

// dummySecretHash stands in for the hash of a token id that does not
// exist, so that an unknown id costs the same hash and comparison as a
// wrong secret.
var dummySecretHash = sha256.Sum256([]byte("rackplane: no such token"))

// Authenticate returns the token a bearer secret belongs to; EUNAUTHORIZED
// when it is unknown, malformed or revoked. It writes nothing: the right
// secret of a live token is noted as used at now, and its last_used_at
// written later with other uses (see TokenUses). A token verified in the
// last TokenCacheTTL is accepted from memory while its cache runs (see
// TokenCache); otherwise it reads one row by its key, and only a token
// whose secret matched and that is not revoked is cached. A revocation
// committed before the read is seen by it, and one committed after drops
// the token from every region instance's cache when its notification
// comes, so a revoked token is refused at once. Whether the id exists
// does not change the work done: an unknown id is compared with a dummy
// hash, in constant time like a known one, so ids cannot be found by
// timing the answers.
func (db *DB) Authenticate(ctx context.Context, plain string, now time.Time) (Token, error) {
	bad := rackplane.Errorf(rackplane.EUNAUTHORIZED, "invalid or revoked token")
	rest, ok := strings.CutPrefix(plain, tokenPrefix)
	idHex, secretHex, ok2 := strings.Cut(rest, "_")
	id, err := uuid.Parse(idHex)
	secret, err2 := hex.DecodeString(secretHex)
	if !ok || !ok2 || len(idHex) != 32 || err != nil || err2 != nil {
		// The form is public: refusing it early tells nothing.
		db.metrics.tokenCheck(tokenMalformed)
		return Token{}, bad
	}
	// A hit is the secret that matched a live token's hash: the key holds
	// the secret's own hash, which no other secret has.
	k := tokenKey{id: id, sum: sha256.Sum256(secret)}
	t, hit := db.tokenCache.get(k, now)
	if !hit {
		gen := db.tokenCache.generation()
		var hash []byte
		err = db.pool.QueryRow(ctx, `SELECT id::text, name, actor, created_at, created_by, revoked_at, last_used_at, secret_hash
			FROM api_tokens WHERE id = $1`, pgtype.UUID{Bytes: id, Valid: true}).
			Scan(&t.ID, &t.Name, &t.Actor, &t.CreatedAt, &t.CreatedBy, &t.RevokedAt, &t.LastUsedAt, &hash)
		found := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return Token{}, wrap("authenticate", err)
		}
		if !found {
			hash = dummySecretHash[:]
		}
		if db.tokenCache.afterRead != nil {
			db.tokenCache.afterRead()
		}
		match := db.secretMatches(k.sum, hash)
		switch {
		case !found:
			db.metrics.tokenCheck(tokenUnknown)
			return Token{}, bad
		case !match:
			db.metrics.tokenCheck(tokenWrongSecret)
			return Token{}, bad
		case t.RevokedAt != nil:
			db.metrics.tokenCheck(tokenRevoked)
			return Token{}, bad
		}
		db.tokenCache.put(k, t, gen, now)
	}
	// The column keeps microseconds; the token answered says this use.
	used := now.Truncate(time.Microsecond)
	db.tokenUses.record(id, used)
	t.LastUsedAt = &used
	db.metrics.tokenCheck(tokenAccepted)
	return t, nil
}

// secretMatches compares sum, the hash of a secret, with hash in constant
// time.
func (db *DB) secretMatches(sum [32]byte, hash []byte) bool {
	db.metrics.hashCompares.Add(1)
	return subtle.ConstantTimeCompare(sum[:], hash) == 1
}

// ListTokens returns every token, newest first.
func (db *DB) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := db.pool.Query(ctx, `SELECT id::text, name, actor, created_at, created_by, revoked_at, last_used_at
		FROM api_tokens ORDER BY created_at DESC`)
	if err != nil {
		return nil, wrap("list tokens", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Token, error) {
		var t Token
		err := row.Scan(&t.ID, &t.Name, &t.Actor, &t.CreatedAt, &t.CreatedBy, &t.RevokedAt, &t.LastUsedAt)
		return t, err
	})
	return out, wrap("list tokens", err)
}

// RevokeToken revokes a token; revoking a revoked token is a no-op.
func (db *DB) RevokeToken(ctx context.Context, id, by string, now time.Time) (Token, error) {
	var t Token
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1
			RETURNING id::text, name, actor, created_at, created_by, revoked_at, last_used_at`, key(id), now).
			Scan(&t.ID, &t.Name, &t.Actor, &t.CreatedAt, &t.CreatedBy, &t.RevokedAt, &t.LastUsedAt)
		if err == pgx.ErrNoRows {
			return rackplane.Errorf(rackplane.ENOTFOUND, "no token %s", id)
		}
		if err != nil {
			return wrap("revoke token", err)
		}
		ev, err := events.New(events.RegionSource, events.TypeTokenRevoked, events.TokenStreamName(t.ID), now,
			events.TokenChanged{TokenID: t.ID, Name: t.Name, Actor: t.Actor})
		if err != nil {
			return err
		}
		ev.Actor = by
		if _, err := db.Emit(ctx, tx, ev.Subject, ExpectAny, ev); err != nil {
			return err
		}
		// Every region instance's token cache hears it at the commit.
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, TokensChannel, t.ID)
		return wrap("revoke token", err)
	})
	if u, perr := uuid.Parse(t.ID); err == nil && perr == nil {
		// Here at once, not when the notification comes back: the next
		// request after the answer is refused.
		db.tokenCache.drop(u)
	}
	return t, err
}
