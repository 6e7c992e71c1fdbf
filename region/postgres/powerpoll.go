package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/events"
)

// PowerPoll is a machine whose power state is due to be polled, with
// what it shows now.
type PowerPoll struct {
	MachineID, RackID, Driver string
	State, Outcome, Error     string
}

// DuePowerPolls returns at most limit machines whose power state is due
// to be polled at now, those never checked first: machines with power
// parameters whose driving rack is online and reports a poll interval,
// last checked longer ago than that interval, scaled by a factor from 0.9
// to 1.1 that is fixed per machine, so that machines added together do not
// stay polled together. skip are machines the caller is not to be given.
func (db *DB) DuePowerPolls(ctx context.Context, now time.Time, limit int, skip []string) ([]PowerPoll, error) {
	rows, err := db.pool.Query(ctx, `SELECT m.id::text, r.id::text, p.driver, m.power_state, m.power_outcome, m.power_error
		FROM machine_power p JOIN machines m ON m.id = p.machine_id
			JOIN racks r ON r.id = power_driving_rack(p, m.boot_rack_id) AND r.online
			JOIN rack_capabilities c ON c.rack_id = r.id
			CROSS JOIN LATERAL (SELECT CASE jsonb_typeof(c.snapshot->'power_poll_interval_seconds') WHEN 'number'
				THEN least((c.snapshot->>'power_poll_interval_seconds')::float8, 86400) ELSE 0 END AS secs) i
		WHERE i.secs > 0 AND NOT (m.id = ANY ($3::uuid[]))
			AND (m.power_checked_at IS NULL OR m.power_checked_at < $1::timestamptz - make_interval(secs => i.secs *
				(0.9 + 0.2 * (('x' || substr(md5(m.id::text), 1, 8))::bit(32)::bigint / 4294967296.0))))
		ORDER BY m.power_checked_at NULLS FIRST, m.id LIMIT $2`, now, limit, keys(skip))
	if err != nil {
		return nil, wrap("due power polls", err)
	}
	polls, err := pgx.CollectRows(rows, pgx.RowToStructByPos[PowerPoll])
	return polls, wrap("due power polls", err)
}

// RecordPowerPoll records what a poll of p found at checkedAt: a
// power_state_changed event when the state or the outcome differs from
// what the machine shows, else only the machine's power_checked_at, so
// that polls which find nothing new leave the event log as it was.
func (db *DB) RecordPowerPoll(ctx context.Context, p PowerPoll, found events.PowerReply, checkedAt time.Time) (changed bool, err error) {
	err = db.InTx(ctx, func(tx pgx.Tx) error {
		var state, outcome string
		var checked *time.Time
		err := tx.QueryRow(ctx, `SELECT power_state, power_outcome, power_checked_at FROM machines WHERE id = $1 FOR UPDATE`, p.MachineID).
			Scan(&state, &outcome, &checked)
		if err != nil {
			return err
		}
		if checked != nil && checked.After(checkedAt) {
			return nil // an action's outcome is newer than the poll
		}
		if state == found.State && outcome == found.Outcome {
			_, err := tx.Exec(ctx, `UPDATE machines SET power_checked_at = $2 WHERE id = $1`, p.MachineID, checkedAt)
			return err
		}
		ev, err := events.New(events.RegionSource, events.TypePowerStateChanged, events.MachineStreamName(p.MachineID), checkedAt,
			events.PowerStateChanged{MachineID: p.MachineID, RackID: p.RackID, Driver: p.Driver, State: found.State, PreviousState: state,
				Outcome: found.Outcome, Error: found.Error, CheckedAt: checkedAt.UTC()})
		if err != nil {
			return err
		}
		ev.Actor = "system:power-poll"
		changed = true
		_, err = db.Emit(ctx, tx, events.MachineStreamName(p.MachineID), ExpectAny, ev)
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // the machine went meanwhile
	}
	return changed, wrap("record power poll", err)
}

// Leader is a PostgreSQL session advisory lock held on a connection of
// its own: the region holding it does a job that one region at a time
// does (polling BMCs); when the region dies, its connection closes and
// the lock goes to the next region that asks.
type Leader struct{ conn *pgxpool.Conn }

// Advisory lock keys of the region's single-leader jobs.
const LeaderPowerPoll int64 = 0x72705f706f6c6c // "rp_poll"

// TryLead takes the lock key, or returns nil when another session holds
// it.
func (db *DB) TryLead(ctx context.Context, key int64) (*Leader, error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, wrap("lead", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
		conn.Release()
		return nil, wrap("lead", err)
	}
	return &Leader{conn: conn}, nil
}

// Alive reports whether the lock is still held: its connection answers.
func (l *Leader) Alive(ctx context.Context) bool {
	return l.conn.Ping(ctx) == nil
}

// Release gives the lock up. The connection is closed rather than
// returned to the pool, which ends the session and its lock whatever
// state it is in.
func (l *Leader) Release() {
	_ = l.conn.Conn().Close(context.Background())
	l.conn.Release()
}
