package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// instances returns n DBs on one new database, as n region instances
// sharing it have, each with its token cache running until the test ends.
func instances(t *testing.T, n int) []*postgres.DB {
	t.Helper()
	url := pgtest.NewDatabase(t)
	var dbs []*postgres.DB
	for i := 0; i < n; i++ {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		db := postgres.New(pool, regiontest.Logger())
		if i == 0 {
			if err := db.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- db.TokenCache().Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("token cache: %v", err)
			}
		})
		waitFor(t, "token cache listening", func() bool { return postgres.TokenCacheLive(db.TokenCache()) })
		dbs = append(dbs, db)
	}
	return dbs
}

// waitFor waits until cond holds, failing the test after a while.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newToken makes a token named name for actor alice.
func newToken(t *testing.T, db *postgres.DB, name string, now time.Time) (postgres.Token, string) {
	t.Helper()
	tok, plain, err := db.CreateToken(context.Background(), name, "alice", "test", now)
	if err != nil {
		t.Fatal(err)
	}
	return tok, plain
}

// authOK checks plain at now on db and says whether it was accepted from
// the cache (no hash comparison made).
func authOK(t *testing.T, db *postgres.DB, plain string, now time.Time) (cached bool) {
	t.Helper()
	before := postgres.HashCompares(db)
	if _, err := db.Authenticate(context.Background(), plain, now); err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return postgres.HashCompares(db) == before
}

func authRefused(t *testing.T, db *postgres.DB, plain string, now time.Time) {
	t.Helper()
	if tok, err := db.Authenticate(context.Background(), plain, now); rackplane.ErrorCode(err) != rackplane.EUNAUTHORIZED {
		t.Fatalf("authenticate: %+v %v, want refused", tok, err)
	}
}

// TestTokenCacheRevocation: a token checked once is accepted from memory
// by each region instance; revoked through one of them, it is refused by
// that one at the next request, and by the other as soon as the
// revocation's notification reaches it, though both had it cached.
func TestTokenCacheRevocation(t *testing.T) {
	ctx := context.Background()
	dbs := instances(t, 2)
	a, b := dbs[0], dbs[1]
	now := time.Now()
	tok, plain := newToken(t, a, "ops", now)
	other, otherPlain := newToken(t, a, "ci", now)
	for _, db := range dbs {
		for _, p := range []string{plain, otherPlain} {
			if authOK(t, db, p, now) {
				t.Fatal("first check served from the cache")
			}
			if !authOK(t, db, p, now) {
				t.Fatal("second check read the row: the cache is not used")
			}
		}
	}
	got, err := a.Authenticate(ctx, plain, now)
	if err != nil || got.ID != tok.ID || got.Actor != "alice" || got.LastUsedAt == nil || !got.LastUsedAt.Equal(now.Truncate(time.Microsecond)) {
		t.Fatalf("from the cache: %+v %v", got, err)
	}

	if _, err := a.RevokeToken(ctx, tok.ID, "test", now); err != nil {
		t.Fatal(err)
	}
	authRefused(t, a, plain, now)
	waitFor(t, "the other instance to hear the revocation", func() bool { return b.TokenCache().Len() == 1 })
	authRefused(t, b, plain, now)
	// Only the revoked token went.
	for _, db := range dbs {
		if !authOK(t, db, otherPlain, now) {
			t.Errorf("token %s not revoked was dropped from the cache", other.ID)
		}
	}
}

// TestTokenCacheRevokedDuringCheck: a check that read its token's row
// before a revocation committed, and finishes after the revocation was
// heard, is answered from that read but leaves nothing cached: the next
// request is refused.
func TestTokenCacheRevokedDuringCheck(t *testing.T) {
	ctx := context.Background()
	dbs := instances(t, 2)
	a, b := dbs[0], dbs[1]
	now := time.Now()
	tok, plain := newToken(t, a, "ops", now)
	// A probe cached by b: its drop, revoked after tok, says that b has
	// heard tok's revocation (notifications come in commit order).
	probe, probePlain := newToken(t, a, "probe", now)
	authOK(t, b, probePlain, now)
	postgres.AfterTokenRead(b, func() {
		postgres.AfterTokenRead(b, nil)
		for _, id := range []string{tok.ID, probe.ID} {
			if _, err := a.RevokeToken(ctx, id, "test", now); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, "b to hear the revocations", func() bool { return b.TokenCache().Len() == 0 })
	})
	authOK(t, b, plain, now)
	authRefused(t, b, plain, now)
}

// TestTokenCacheTTL: a revocation the region instances were not told of
// (the row changed by hand) is refused once TokenCacheTTL has passed
// since the token was checked.
func TestTokenCacheTTL(t *testing.T) {
	ctx := context.Background()
	db := instances(t, 1)[0]
	t0 := time.Now()
	tok, plain := newToken(t, db, "ops", t0)
	authOK(t, db, plain, t0)
	if _, err := db.Pool().Exec(ctx, `UPDATE api_tokens SET revoked_at = now() WHERE id = $1`, tok.ID); err != nil {
		t.Fatal(err)
	}
	// Within the bound the docs give, still accepted from memory.
	if !authOK(t, db, plain, t0.Add(postgres.TokenCacheTTL-time.Millisecond)) {
		t.Fatal("not from the cache")
	}
	authRefused(t, db, plain, t0.Add(postgres.TokenCacheTTL))
}

// TestTokenCacheOffWithoutListener: when the connection that hears
// revocations is lost, every cached token is forgotten (a revocation
// could be missed meanwhile); once heard again the cache fills anew.
func TestTokenCacheOffWithoutListener(t *testing.T) {
	ctx := context.Background()
	db := instances(t, 1)[0]
	now := time.Now()
	_, plain := newToken(t, db, "ops", now)
	authOK(t, db, plain, now)
	if db.TokenCache().Len() != 1 {
		t.Fatalf("%d tokens cached, want 1", db.TokenCache().Len())
	}
	if _, err := db.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN "`+postgres.TokensChannel+`"'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache to be emptied", func() bool { return db.TokenCache().Len() == 0 })
	waitFor(t, "the cache listening again", func() bool { return postgres.TokenCacheLive(db.TokenCache()) })
	if authOK(t, db, plain, now) {
		t.Fatal("served from a cache that was emptied")
	}
	if !authOK(t, db, plain, now) {
		t.Fatal("not cached after reconnecting")
	}
}

// TestTokenCacheBounded: a flood of wrong tokens (unknown ids, wrong
// secrets of a real id, a revoked token's secret) caches nothing, and
// more real tokens than the cache holds keep it at its bound, each still
// accepted.
func TestTokenCacheBounded(t *testing.T) {
	ctx := context.Background()
	db := instances(t, 1)[0]
	now := time.Now()
	live, livePlain := newToken(t, db, "ops", now)
	gone, gonePlain := newToken(t, db, "old", now)
	if _, err := db.RevokeToken(ctx, gone.ID, "test", now); err != nil {
		t.Fatal(err)
	}
	liveID := livePlain[:len("rp_")+32]
	for i := 0; i < 500; i++ {
		secret := make([]byte, 32)
		_, _ = rand.Read(secret)
		junk := []string{
			"rp_" + strings.ReplaceAll(uuid.NewString(), "-", "") + "_" + hex.EncodeToString(secret),
			liveID + "_" + hex.EncodeToString(secret),
			gonePlain,
		}
		for _, p := range junk {
			authRefused(t, db, p, now)
		}
	}
	if n := db.TokenCache().Len(); n != 0 {
		t.Fatalf("%d tokens cached after refusals only", n)
	}
	authOK(t, db, livePlain, now)
	if n := db.TokenCache().Len(); n != 1 {
		t.Fatalf("%d tokens cached, want %s alone", n, live.ID)
	}

	const max = 3
	postgres.SetTokenCacheMax(db.TokenCache(), max)
	var plains []string
	for i := 0; i < 2*max; i++ {
		_, p := newToken(t, db, fmt.Sprintf("t%d", i), now)
		plains = append(plains, p)
	}
	for round := 0; round < 2; round++ {
		for _, p := range plains {
			authOK(t, db, p, now)
			if n := db.TokenCache().Len(); n > max {
				t.Fatalf("%d tokens cached, bound %d", n, max)
			}
		}
	}
}
