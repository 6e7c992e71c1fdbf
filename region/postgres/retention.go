package postgres

import (
	"context"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
)

// TelemetryTypes are the events the region may prune from the log: what
// racks and the region report of boot traffic, which nobody authenticates
// (TFTP, HTTP boot, DHCP). The one projection that reads any (DHCP
// leases, of dhcp_leases_changed) keeps what it made when they go, and
// needs only the recent ones, since leases end; the one follower that
// reads any (discovery, of boot_handoff) has done so before they may go
// (see PruneTelemetry). Every other event is a state change
// and stays for good. Migration 0013's telemetry_type lists the same
// types: only rows of these may be deleted, and only by a transaction
// that says it prunes.
var TelemetryTypes = []string{
	events.TypeBootHandoff,
	events.TypeBootTransfer,
	events.TypeBootRequestRejected,
	events.TypeBootRequestsSummarized,
	events.TypeHandoffFileDeleted,
	events.TypeDHCPLeasesChanged,
	events.TypeDiscoveryRefused,
}

// RetentionPolicy says which telemetry events PruneTelemetry deletes: those
// older than MaxAge, and those beyond the newest KeepPerSource of each
// source (a rack, or the region). A zero field does not prune.
type RetentionPolicy struct {
	MaxAge        time.Duration
	KeepPerSource int
	// Batch is how many rows one transaction deletes (default 5000), so
	// that pruning never holds many locks or a long transaction.
	Batch int
}

// pruneLockObject is, with appendLockClass, the advisory lock each
// pruning transaction holds: region instances prune in turn, not side by
// side.
const pruneLockObject = 3

// PruneTelemetry deletes the telemetry events p allows to go, oldest first,
// and returns how many of each type it deleted.
//
// It deletes nothing a follower of the log has not read: only rows at or
// below the lowest cursor of follower_cursors, in follower order (txid,
// position); with no cursor saved yet, nothing. A follower never reads
// below its cursor again, and every reader skips over missing positions
// (it asks for what is after its cursor, in order), so a deleted row
// below every cursor is one nobody would have read again: exactly once
// still holds. Rows still in the outbox are kept for the relay. A reader
// outside follower_cursors (GET /api/v1/events, rackplane events -f)
// that is further behind than the policy may miss pruned telemetry, never
// a state change. Region instances that prune at once take turns, a
// batch at a time. Pruning stops early, without error, when ctx ends.
func (db *DB) PruneTelemetry(ctx context.Context, p RetentionPolicy, now time.Time) (map[string]int64, error) {
	if p.Batch <= 0 {
		p.Batch = 5000
	}
	pruned := map[string]int64{}
	below, ok, err := db.lowestCursor(ctx)
	if err != nil || !ok {
		return pruned, err
	}
	var passes []prunePass
	if p.MaxAge > 0 {
		passes = append(passes, prunePass{"e.recorded_at < $4", []any{now.Add(-p.MaxAge)}})
	}
	if p.KeepPerSource > 0 {
		limits, err := db.countLimits(ctx, p.KeepPerSource)
		if err != nil {
			return pruned, err
		}
		for source, pos := range limits {
			passes = append(passes, prunePass{"e.source = $4 AND e.position <= $5", []any{source, pos}})
		}
	}
	for _, pass := range passes {
		for {
			n, err := db.pruneBatch(ctx, pass, below, p.Batch, pruned)
			if ctx.Err() != nil {
				return pruned, nil
			}
			if err != nil {
				return pruned, err
			}
			if n < p.Batch {
				break
			}
		}
	}
	return pruned, nil
}

// prunePass says which telemetry rows may go, besides their type and the
// followers' cursors: a condition on the row e, with its arguments from
// $4.
type prunePass struct {
	where string
	args  []any
}

// lowestCursor is the lowest cursor of follower_cursors; false when there
// is none.
func (db *DB) lowestCursor(ctx context.Context) (Cursor, bool, error) {
	rows, err := db.pool.Query(ctx, `SELECT cursor FROM follower_cursors`)
	if err != nil {
		return Cursor{}, false, wrap("prune: follower cursors", err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return Cursor{}, false, wrap("prune: follower cursors", err)
	}
	var low Cursor
	for i, s := range texts {
		c, err := ParseCursor(s)
		if err != nil {
			return Cursor{}, false, err
		}
		if i == 0 || c.TxID < low.TxID || c.TxID == low.TxID && c.Position < low.Position {
			low = c
		}
	}
	return low, len(texts) > 0, nil
}

// countLimits returns, for each source with more than keep telemetry
// events, the position of its newest event beyond the keep newest.
// Sources are found with a loose scan of the source index: one probe per
// source, however many events each has.
func (db *DB) countLimits(ctx context.Context, keep int) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, `WITH RECURSIVE s(source) AS (
			(SELECT source FROM events WHERE telemetry_type(type) ORDER BY source LIMIT 1)
			UNION ALL
			SELECT (SELECT e.source FROM events e WHERE telemetry_type(e.type) AND e.source > s.source ORDER BY e.source LIMIT 1)
			FROM s WHERE s.source IS NOT NULL)
		SELECT s.source, l.position FROM s CROSS JOIN LATERAL (
			SELECT position FROM events e WHERE telemetry_type(e.type) AND e.source = s.source
			ORDER BY position DESC OFFSET $1 LIMIT 1) l
		WHERE s.source IS NOT NULL`, keep)
	if err != nil {
		return nil, wrap("prune: count per source", err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var source string
		var pos int64
		if err := rows.Scan(&source, &pos); err != nil {
			return nil, wrap("prune: count per source", err)
		}
		out[source] = pos
	}
	return out, wrap("prune: count per source", rows.Err())
}

// pruneBatch deletes up to batch telemetry rows at or below the cursor
// below that pass allows to go, in a transaction of its own, and adds
// them to pruned. It appends nothing, so it takes no appender's mark: it
// never holds the log's readers back.
func (db *DB) pruneBatch(ctx context.Context, pass prunePass, below Cursor, batch int, pruned map[string]int64) (int, error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return 0, wrap("prune: begin", err)
	}
	// Once the rows are deleted, the commit goes through even as ctx
	// ends: the count of what was pruned is then exact.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	defer tx.Rollback(cctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, $2::int)`, appendLockClass, pruneLockObject); err != nil {
		return 0, wrap("prune: lock", err)
	}
	if _, err := tx.Exec(ctx, `SET LOCAL rackplane.prune_telemetry = 'on'`); err != nil {
		return 0, wrap("prune: say so", err)
	}
	args := append([]any{pgx.QueryExecModeExec, strconv.FormatUint(below.TxID, 10), below.Position, batch}, pass.args...)
	rows, err := tx.Query(ctx, `DELETE FROM events WHERE position IN (
			SELECT e.position FROM events e WHERE telemetry_type(e.type)
				AND (e.txid, e.position) <= ($1::text::xid8, $2::bigint)
				AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.id)
				AND `+pass.where+`
			LIMIT $3)
		RETURNING type`, args...)
	if err != nil {
		return 0, wrap("prune: delete", err)
	}
	types, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, wrap("prune: delete", err)
	}
	if err := tx.Commit(cctx); err != nil {
		return 0, wrap("prune: commit", err)
	}
	for _, t := range types {
		pruned[t]++
	}
	return len(types), nil
}
