package postgres

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Projection keeps tables derived from the log. Apply runs in the
// transaction that appends the event, so a projection is never behind the
// log it was committed with; Rebuild replays the log into empty tables.
type Projection struct {
	Name string
	// Tables are emptied before a rebuild, in this order (children first).
	Tables []string
	// Apply queues the statements that update the tables for one event. It
	// must ignore types it does not know and depend on nothing but the
	// event and the tables. Statements are queued, not run, so that a batch
	// of events costs one round trip to Postgres, not one per event.
	Apply func(q *pgx.Batch, e Stored) error
}

// project applies every projection to evs, in order, in one round trip.
func (db *DB) project(ctx context.Context, tx pgx.Tx, evs []Stored) error {
	b := &pgx.Batch{}
	for _, s := range evs {
		for _, p := range db.projections {
			if err := p.Apply(b, s); err != nil {
				return fmt.Errorf("projection %s: event %s (%s): %w", p.Name, s.ID, s.Type, err)
			}
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}

// RebuildProjections empties every projection's tables and replays the
// whole log into them, in one transaction that blocks appends meanwhile. It
// returns how many events it replayed. Replay is in position order, which
// within one stream is version order (appends to a stream are serialised by
// its streams row).
func (db *DB) RebuildProjections(ctx context.Context) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		n = 0
		if _, err := tx.Exec(ctx, `LOCK TABLE streams IN EXCLUSIVE MODE`); err != nil {
			return wrap("rebuild: lock", err)
		}
		var tables []string
		for _, p := range db.projections {
			tables = append(tables, p.Tables...)
		}
		if len(tables) > 0 {
			if _, err := tx.Exec(ctx, "TRUNCATE "+strings.Join(tables, ", ")); err != nil {
				return wrap("rebuild: truncate", err)
			}
		}
		var after int64
		for {
			rows, err := tx.Query(ctx, selectStored+` WHERE position > $1 ORDER BY position LIMIT 1000`, after)
			if err != nil {
				return wrap("rebuild: read", err)
			}
			batch, err := pgx.CollectRows(rows, scanStored)
			if err != nil {
				return wrap("rebuild: read", err)
			}
			if len(batch) == 0 {
				return nil
			}
			if err := db.project(ctx, tx, batch); err != nil {
				return err
			}
			n += len(batch)
			after = batch[len(batch)-1].Position
		}
	})
	return n, err
}
