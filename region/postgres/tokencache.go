package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/internal/backoff"
)

// TokensChannel is notified, with the token's id, in the transaction that
// revokes an API token: every region instance on the database hears it
// when the revocation commits.
const TokensChannel = "rackplane_tokens"

// TokenCacheTTL is how long a verified API token is accepted from memory
// before its row is read again. It bounds how late a region instance can
// notice a revocation it was not told of: one whose notification was lost
// on a connection that died without an error, or a row changed by hand in
// SQL. A revocation through the API or the client is refused at once by
// the instance that made it, and by every other as soon as the
// notification reaches it.
const TokenCacheTTL = 2 * time.Second

// maxCachedTokens bounds the cache's memory: only tokens whose secret was
// verified enter it, so junk never does, but many real tokens in use at
// once each cost a row read per TokenCacheTTL past this many.
const maxCachedTokens = 4096

// TokenCache keeps the API tokens verified in the last TokenCacheTTL, so
// that a request is checked against memory rather than by a query of its
// own. An entry is keyed by the token's id and the SHA-256 of its secret:
// a hit is the very secret that matched the row's hash. Revocations drop
// entries as they are heard on TokensChannel (see Run). The cache is used
// only while Run listens: before, between connections and without Run,
// every check reads the row, as no notification could be heard then.
type TokenCache struct {
	db  *DB
	ttl time.Duration
	max int

	mu   sync.RWMutex
	live bool
	// gen changes whenever entries are dropped: a check that read its row
	// before a drop does not store what it read (the drop may have been
	// for that token, its row read before the revocation committed).
	gen     uint64
	entries map[tokenKey]cachedToken
	// afterRead, when set (by tests), runs after a check read its row.
	afterRead func()
}

type tokenKey struct {
	id  uuid.UUID
	sum [32]byte // SHA-256 of the secret
}

type cachedToken struct {
	tok     Token
	expires time.Time
}

func newTokenCache(db *DB) *TokenCache {
	return &TokenCache{db: db, ttl: TokenCacheTTL, max: maxCachedTokens, entries: map[tokenKey]cachedToken{}}
}

// TokenCache returns db's cache of verified tokens; the region runs it.
func (db *DB) TokenCache() *TokenCache { return db.tokenCache }

// get returns the token verified under k, if it was within the TTL.
func (c *TokenCache) get(k tokenKey, now time.Time) (Token, bool) {
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return Token{}, false
	}
	return e.tok, true
}

// generation is taken before a row is read, for put.
func (c *TokenCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put keeps t, verified under k from a row read after generation gen,
// unless something was dropped since or the cache is not live.
func (c *TokenCache) put(k tokenKey, t Token, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		// Expired entries go first; failing those, any one (the map's
		// order is random): it is read again at its next use.
		evicted := false
		for ek, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, ek)
				evicted = true
			}
		}
		if !evicted {
			for ek := range c.entries {
				delete(c.entries, ek)
				break
			}
		}
	}
	t.LastUsedAt = nil
	c.entries[k] = cachedToken{tok: t, expires: now.Add(c.ttl)}
}

// drop forgets token id.
func (c *TokenCache) drop(id uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k := range c.entries {
		if k.id == id {
			delete(c.entries, k)
		}
	}
}

// reset forgets every token and says whether the cache may be used.
func (c *TokenCache) reset(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
	c.live = live
}

// Len is how many tokens are cached.
func (c *TokenCache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// Run listens on TokensChannel until ctx ends, dropping each revoked
// token as its notification comes, and reconnects within a second when
// the connection fails. The cache starts empty on every connection and is
// not used while there is none: a revocation of that time is not missed.
func (c *TokenCache) Run(ctx context.Context) error {
	defer c.reset(false)
	retry := backoff.New(backoff.Policy{Max: time.Second})
	for ctx.Err() == nil {
		err := c.db.listen(ctx, TokensChannel, func() { c.reset(true) }, func(payload string) {
			id, err := uuid.Parse(payload)
			if err != nil {
				// Not ours to read: forget every token rather than guess.
				c.reset(true)
				return
			}
			c.drop(id)
		})
		c.reset(false)
		if err != nil && ctx.Err() == nil {
			c.db.log.Debug("token cache", "err", err)
			retry.Wait(ctx)
		}
	}
	return nil
}
