package postgres

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
)

// TokenUseFlushInterval is how often the API tokens' uses are written: a
// token's last_used_at lags its use by at most this much (and a region
// that dies without stopping loses at most this much of it).
const TokenUseFlushInterval = 5 * time.Second

// TokenUses records when API tokens were last used off the request path:
// Authenticate notes each accepted use in memory, and Run writes the
// latest use of every token used since the last write in one statement
// every TokenUseFlushInterval and once more when it stops. A read request
// thus writes nothing, and a token used by every request costs one update
// per interval, not one per request (which serialised all requests of a
// token on its row). A use accepted from the token cache is recorded
// the same (see TokenCache).
type TokenUses struct {
	db  *DB
	log *slog.Logger
	// after is the clock Run waits on (time.After but in tests).
	after    func(time.Duration) <-chan time.Time
	interval time.Duration

	mu      sync.Mutex
	pending map[uuid.UUID]time.Time
}

func newTokenUses(db *DB) *TokenUses {
	return &TokenUses{db: db, log: db.log, after: time.After, interval: TokenUseFlushInterval, pending: map[uuid.UUID]time.Time{}}
}

// TokenUses returns the recorder of db's token uses; the region runs it.
func (db *DB) TokenUses() *TokenUses { return db.tokenUses }

// record notes that token id was used at at; only the latest use of
// each token is kept until the next write.
func (u *TokenUses) record(id uuid.UUID, at time.Time) {
	u.mu.Lock()
	if prev, ok := u.pending[id]; !ok || at.After(prev) {
		u.pending[id] = at
	}
	u.mu.Unlock()
}

// Pending is how many tokens have uses not written yet.
func (u *TokenUses) Pending() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}

// Flush writes the uses noted so far. A use never moves last_used_at
// back (another region instance may have written a later one). When the
// write fails the uses are kept for the next one.
func (u *TokenUses) Flush(ctx context.Context) error {
	u.mu.Lock()
	taken := u.pending
	u.pending = map[uuid.UUID]time.Time{}
	u.mu.Unlock()
	if len(taken) == 0 {
		return nil
	}
	// In key order, so that instances writing the same tokens at once
	// lock their rows in the same order.
	ids := make([]uuid.UUID, 0, len(taken))
	for id := range taken {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ats := make([]time.Time, len(ids))
	for i, id := range ids {
		ats[i] = taken[id]
	}
	_, err := u.db.pool.Exec(ctx, `UPDATE api_tokens t SET last_used_at = u.at
		FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
		WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)`, ids, ats)
	if err != nil {
		u.db.metrics.tokenUseWrites.WithLabelValues("failed").Inc()
		for id, at := range taken {
			u.record(id, at)
		}
		return wrap("record token uses", err)
	}
	u.db.metrics.tokenUseWrites.WithLabelValues("written").Inc()
	return nil
}

// Run writes the uses every interval until ctx ends, then writes what is
// left (with a few seconds of its own to do it) and returns. The region
// stops it after its API has stopped answering, so that no use is noted
// after the last write.
func (u *TokenUses) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := u.Flush(fctx); err != nil {
				u.log.Error("token uses not recorded at stop", "tokens", u.Pending(), "err", err)
			}
			return nil
		case <-u.after(u.interval):
			if err := u.Flush(ctx); err != nil && ctx.Err() == nil {
				u.log.Warn("token uses not recorded, retrying at the next interval", "tokens", u.Pending(), "err", err)
			}
		}
	}
}
