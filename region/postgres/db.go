package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/migrations"
)

// DB is the region's database.
type DB struct {
	pool        *pgxpool.Pool
	log         *slog.Logger
	projections []Projection
	// horizon is how the log's readers find what they may read; only the
	// benchmark that compares the mechanisms changes it.
	horizonMode horizonMode
	metrics     *dbMetrics
	tokenUses   *TokenUses
	tokenCache  *TokenCache
}

// New wraps pool. The projections are applied on every append.
func New(pool *pgxpool.Pool, log *slog.Logger) *DB {
	db := &DB{pool: pool, log: log, metrics: newDBMetrics()}
	db.tokenUses = newTokenUses(db)
	db.tokenCache = newTokenCache(db)
	db.projections = []Projection{racksProjection, osRegistryProjection, machinesProjection, preseedsProjection, volumesProjection, subnetsProjection, powerProjection, hardwareProjection, scriptsProjection, leasesProjection}
	return db
}

// AddProjection registers a projection; call before the first append.
func (db *DB) AddProjection(p Projection) { db.projections = append(db.projections, p) }

// Pool returns the underlying pool.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Migrate applies the embedded migrations.
func (db *DB) Migrate(ctx context.Context) error {
	_, err := migrations.Apply(ctx, db.pool, db.log)
	return err
}

// Ping checks that Postgres answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// appenderTx begins a transaction that carries the mark that it may
// append, taken before it has a transaction id: readers of the log wait
// only for transactions that hold it (see horizon). It goes with BEGIN, so
// it costs no round trip of its own.
// serializedAppenderTx is the benchmark's other mechanism: one appender
// at a time.
var serializedAppenderTx = pgx.TxOptions{BeginQuery: fmt.Sprintf("BEGIN; SELECT pg_advisory_xact_lock(%d, %d)", appendLockClass, appendLockObject+1)}

var appenderTx = pgx.TxOptions{BeginQuery: fmt.Sprintf("BEGIN; SELECT pg_advisory_xact_lock_shared(%d, %d)", appendLockClass, appendLockObject)}

// notifyLaterQuery, after a transaction's BEGIN, keeps its appends from
// notifying EventsChannel (migration 0030): its writer notifies after the
// commit instead (NotifyAppended). It goes with BEGIN, so it costs no round
// trip of its own.
const notifyLaterQuery = "; SELECT set_config('rackplane.notify_after_commit', 'on', true)"

// InTx runs fn in a transaction and commits it. A serialisation failure, a
// deadlock, or a concurrent append of the same event id rolls back and runs
// fn again (a few times), so fn must do nothing outside the transaction.
func (db *DB) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return db.inTx(ctx, false, fn)
}

// InTxNotifyLater is InTx for a writer that tells the log's readers of its
// appends itself, by NotifyAppended once InTxNotifyLater has returned nil
// (and after an error too: a commit whose answer was lost may have
// committed). Its transactions do not notify: PostgreSQL lets one
// notifying transaction commit at a time, holding that turn across the
// commit's WAL flush, so that appenders that notify commit one after the
// other, while these commit at once and their writer sends one
// notification for many commits.
func (db *DB) InTxNotifyLater(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return db.inTx(ctx, true, fn)
}

// NotifyAppended wakes the log's readers (EventsChannel), as an append's
// commit does unless it was made by InTxNotifyLater.
func (db *DB) NotifyAppended(ctx context.Context) error {
	_, err := db.pool.Exec(ctx, "SELECT pg_notify($1, '')", EventsChannel)
	return wrap("notify appended", err)
}

func (db *DB) inTx(ctx context.Context, notifyLater bool, fn func(tx pgx.Tx) error) error {
	// Short waits, jittered so that the transactions that collided do not
	// collide again.
	retry := backoff.New(backoff.Policy{Initial: 5 * time.Millisecond, Max: 40 * time.Millisecond})
	for attempt := 1; ; attempt++ {
		opts := appenderTx
		switch db.horizonMode {
		case horizonServerSnapshot:
			opts = pgx.TxOptions{}
		case horizonSerialized:
			opts = serializedAppenderTx
		}
		if notifyLater {
			if opts.BeginQuery == "" {
				opts.BeginQuery = "BEGIN"
			}
			opts.BeginQuery += notifyLaterQuery
		}
		err := pgx.BeginTxFunc(ctx, db.pool, opts, fn)
		if !retryable(err) || attempt == 5 || !retry.Wait(ctx) {
			return err
		}
	}
}

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01": // serialization_failure, deadlock_detected
		return true
	case "23505": // unique_violation
		return pgErr.ConstraintName == "events_id_key"
	}
	return false
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
