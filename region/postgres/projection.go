package postgres

import (
	"context"
	"fmt"

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
	// Rebuild, when set, makes the stand-in for Apply that a rebuild uses:
	// one that may hold back what it can write later at once, when many
	// events change the same row in a way that does not depend on order.
	// Its tables must end as Apply would have left them.
	Rebuild func() RebuildApplier
	// Coalesce, when set, makes the stand-in for Apply over the events of
	// one append: it may hold back, until its Flush at the end of the
	// append, effects that do not depend on their order, so that a batch
	// of many events writes a row they all change once rather than once
	// each (each rewrite of a row within a transaction costs more than
	// the last). It reads nothing of the tables; they must end as Apply
	// would have left them.
	Coalesce func() RebuildApplier
}

// RebuildApplier applies events in a rebuild, as Projection.Apply does,
// and may hold some of their effect back until Flush.
type RebuildApplier interface {
	Apply(q *pgx.Batch, e Stored) error
	// Flush queues whatever Apply held back. The rebuild calls it before
	// each commit of its progress.
	Flush(q *pgx.Batch)
}

// rebuildLoader is a RebuildApplier that keeps its tables in memory: Load
// reads them (from the shadow tables, which a resumed rebuild has filled
// in part) before the first event.
type rebuildLoader interface {
	Load(ctx context.Context, tx pgx.Tx) error
}

// applyFunc makes a RebuildApplier of a Projection's Apply.
type applyFunc func(q *pgx.Batch, e Stored) error

func (f applyFunc) Apply(q *pgx.Batch, e Stored) error { return f(q, e) }
func (f applyFunc) Flush(*pgx.Batch)                   {}

// project applies every projection to evs, in order, in one round trip.
func (db *DB) project(ctx context.Context, tx pgx.Tx, evs []Stored) error {
	b := &pgx.Batch{}
	apply := make([]func(*pgx.Batch, Stored) error, len(db.projections))
	var held []RebuildApplier
	for i, p := range db.projections {
		apply[i] = p.Apply
		if p.Coalesce != nil && len(evs) > 1 {
			a := p.Coalesce()
			apply[i] = a.Apply
			held = append(held, a)
		}
	}
	for _, s := range evs {
		for i, p := range db.projections {
			if err := apply[i](b, s); err != nil {
				return fmt.Errorf("projection %s: event %s (%s): %w", p.Name, s.ID, s.Type, err)
			}
		}
	}
	for _, a := range held {
		a.Flush(b)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("projections: %w", err)
	}
	return nil
}
