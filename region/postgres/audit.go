package postgres

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID        int64           `json:"id"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	RequestID string          `json:"request_id"`
	Outcome   string          `json:"outcome"`
	Status    int             `json:"status"`
	Before    json.RawMessage `json:"before,omitempty"`
	After     json.RawMessage `json:"after,omitempty"`
	Detail    string          `json:"detail,omitempty"`
}

// Audit appends an entry.
func (db *DB) Audit(ctx context.Context, e AuditEntry) error {
	_, err := db.pool.Exec(ctx, `INSERT INTO audit_log (actor, action, target, request_id, outcome, status, before, after, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		e.Actor, e.Action, e.Target, e.RequestID, e.Outcome, e.Status, nullJSON(e.Before), nullJSON(e.After), e.Detail)
	return wrap("audit", err)
}

func nullJSON(b json.RawMessage) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}

// AuditFilter narrows a read of the audit log; zero fields match all.
type AuditFilter struct {
	Actor, Action, Target string
	Since, Until          time.Time
	After                 int64 // cursor: entries with a larger id
	Limit                 int
	// Last takes the newest Limit entries (still returned in id order)
	// rather than the first ones after After.
	Last bool
}

// ListAudit returns entries in id order after the cursor, or the newest.
func (db *DB) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	var since, until *time.Time
	if !f.Since.IsZero() {
		since = &f.Since
	}
	if !f.Until.IsZero() {
		until = &f.Until
	}
	rows, err := db.pool.Query(ctx, `SELECT id, at, actor, action, target, request_id, outcome, status, before, after, detail
		FROM audit_log WHERE id > $1 AND ($2 = '' OR actor = $2) AND ($3 = '' OR action = $3)
			AND ($4 = '' OR target = $4 OR target LIKE $4 || '/%')
			AND ($5::timestamptz IS NULL OR at >= $5) AND ($6::timestamptz IS NULL OR at < $6)
		ORDER BY CASE WHEN $8 THEN -id ELSE id END LIMIT $7`, f.After, f.Actor, f.Action, f.Target, since, until, f.Limit, f.Last)
	if err != nil {
		return nil, wrap("list audit", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var before, after []byte
		err := row.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.RequestID, &e.Outcome, &e.Status, &before, &after, &e.Detail)
		e.Before, e.After = before, after
		return e, err
	})
	if f.Last {
		slices.Reverse(out)
	}
	return out, wrap("list audit", err)
}
