package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
)

// OutboxChannel is the LISTEN/NOTIFY channel that wakes the relay when an
// emit commits.
const OutboxChannel = "rackplane_outbox"

// Emit appends region events to stream within tx and queues them for
// relay to NATS: the state change, the event and the relay's work commit
// together or not at all.
func (db *DB) Emit(ctx context.Context, tx pgx.Tx, stream string, expected int64, evs ...events.Event) ([]Appended, error) {
	for _, e := range evs {
		if e.Source != events.RegionSource {
			return nil, fmt.Errorf("emit: event %s has source %q; only region events go through the outbox", e.ID, e.Source)
		}
	}
	appended, err := db.Append(ctx, tx, stream, expected, evs...)
	if err != nil {
		return nil, err
	}
	var ids []string
	var positions []int64
	for _, a := range appended {
		if !a.Duplicate {
			ids = append(ids, a.ID)
			positions = append(positions, a.Position)
		}
	}
	if len(ids) == 0 {
		return appended, nil
	}
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (event_id, position)
		SELECT * FROM unnest($1::uuid[], $2::bigint[])`, ids, positions); err != nil {
		return nil, wrap("emit: queue", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, OutboxChannel); err != nil {
		return nil, wrap("emit: notify", err)
	}
	return appended, nil
}

// RelayOutbox takes up to limit queued events, in order, and hands them to
// publish, which returns the ids JetStream acknowledged; those leave the
// outbox. Rows are claimed with SKIP LOCKED, so two regions relaying at
// once never take the same event; an event published but not yet deleted
// when a region dies is published again later, and JetStream's duplicate
// window (Nats-Msg-Id is the event id) or the consumer's dedupe by id
// absorbs it. It returns how many events left the outbox.
func (db *DB) RelayOutbox(ctx context.Context, limit int, publish func(context.Context, []events.Event) ([]string, error)) (int, error) {
	n := 0
	// The publish error of a pass that published nothing; the transaction
	// only rolls back on it, so it is kept here rather than threaded
	// through pgx.BeginFunc's error.
	var publishErr error
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH claimed AS (
				SELECT event_id FROM outbox ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED)
			`+selectStored+` WHERE id IN (SELECT event_id FROM claimed) ORDER BY position`, limit)
		if err != nil {
			return wrap("relay: claim", err)
		}
		batch, err := pgx.CollectRows(rows, scanStored)
		if err != nil {
			return wrap("relay: claim", err)
		}
		if len(batch) == 0 {
			return nil
		}
		evs := make([]events.Event, len(batch))
		for i, s := range batch {
			evs[i] = s.Event
		}
		acked, perr := publish(ctx, evs)
		if len(acked) > 0 {
			tag, err := tx.Exec(ctx, `DELETE FROM outbox WHERE event_id = ANY($1::uuid[])`, acked)
			if err != nil {
				return wrap("relay: dequeue", err)
			}
			n = int(tag.RowsAffected())
		}
		if perr != nil && len(acked) == 0 {
			publishErr = perr
			return errRelayNothing
		}
		return nil
	})
	if publishErr != nil {
		return 0, fmt.Errorf("relay: publish: %w", publishErr)
	}
	return n, err
}

// errRelayNothing rolls back a pass that published nothing.
var errRelayNothing = errors.New("nothing published")

// OutboxLength returns how many events wait for relay.
func (db *DB) OutboxLength(ctx context.Context) (int64, error) {
	var n int64
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
	return n, wrap("outbox length", err)
}
