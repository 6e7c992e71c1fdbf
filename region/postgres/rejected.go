package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Rejected is a message the region refused.
type Rejected struct {
	ID          int64     `json:"id"`
	ReceivedAt  time.Time `json:"received_at"`
	NATSSubject string    `json:"nats_subject"`
	EventID     string    `json:"event_id,omitempty"`
	Type        string    `json:"type,omitempty"`
	Source      string    `json:"source,omitempty"`
	Reason      string    `json:"reason"`
	Detail      string    `json:"detail"`
	Raw         []byte    `json:"-"`
}

// maxRawKept bounds what is kept of a rejected message: enough to debug
// it, not enough for a misbehaving sender to fill the disk.
const maxRawKept = 64 << 10

// RecordRejected stores a refused message with its reason.
func (db *DB) RecordRejected(ctx context.Context, r Rejected) error {
	raw := r.Raw
	if len(raw) > maxRawKept {
		raw = raw[:maxRawKept]
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO rejected_events (nats_subject, event_id, type, source, reason, detail, raw)
		VALUES ($1, nullif($2, ''), nullif($3, ''), nullif($4, ''), $5, $6, $7)`,
		r.NATSSubject, r.EventID, r.Type, r.Source, r.Reason, r.Detail, raw)
	return wrap("record rejected event", err)
}

// ListRejected returns the newest rejected messages first.
func (db *DB) ListRejected(ctx context.Context, limit int) ([]Rejected, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := db.pool.Query(ctx, `SELECT id, received_at, nats_subject, coalesce(event_id, ''),
		coalesce(type, ''), coalesce(source, ''), reason, detail, raw
		FROM rejected_events ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, wrap("list rejected", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Rejected, error) {
		var r Rejected
		err := row.Scan(&r.ID, &r.ReceivedAt, &r.NATSSubject, &r.EventID, &r.Type, &r.Source, &r.Reason, &r.Detail, &r.Raw)
		return r, err
	})
	return out, wrap("list rejected", err)
}
