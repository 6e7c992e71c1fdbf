package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Kinds of power lifecycle work (power_lifecycle.kind). A deploy task
// boots the machine from the network into the operation that set its boot
// decision: a deployment's installer, or the ephemeral environment of a
// release that erases the disks (the machine's status then says which).
const (
	PowerTaskDeploy  = "deploy"
	PowerTaskRelease = "release"
)

// PowerTask is the power work a machine's operation needs, leased to one
// attempt by Token until the attempt ends. Times are the database's, so
// regions whose clocks differ agree on leases.
type PowerTask struct {
	MachineID string
	Kind      string
	// Operation is the deployment id of a deploy, or the erase's
	// (machine_erasing) id ("" for a release).
	Operation string
	// Attempts are those made before this one.
	Attempts int
	// Issued says an attempt before this one sent the power on (or
	// cycle) and its outcome was lost.
	Issued bool
	Token  string
	// Status is the machine's when the task was leased (deploying,
	// erasing, releasing), for what the attempt tells.
	Status string
}

// HasPowerParameters reports whether machine id has power parameters.
func (db *DB) HasPowerParameters(ctx context.Context, id string) (bool, error) {
	if _, err := uuid.Parse(id); err != nil {
		return false, nil
	}
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM machine_power WHERE machine_id = $1)`, id).Scan(&ok)
	return ok, wrap("has power parameters", err)
}

// SyncPowerTasks makes the tasks of new operations and removes those of
// machines no longer in theirs. A deployment has power work when the
// machine had power parameters when it started (parameters added
// mid-install do not cycle a machine someone booted by hand), and so has
// an erase (a release's: the machine boots the ephemeral environment as a
// deployment boots its installer); a release when the machine is
// releasing (the release decided to switch it off).
// Only new operations touch the table: rows already right are neither
// written nor locked.
func (db *DB) SyncPowerTasks(ctx context.Context) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO power_lifecycle AS t (machine_id, kind, operation, next_attempt_at)
				SELECT m.id, 'deploy', m.deployment_id::text, now() FROM machines m JOIN machine_power p ON p.machine_id = m.id
					WHERE m.status = 'deploying' AND m.deployment_id IS NOT NULL AND p.updated_at <= m.deploy_started_at
						AND NOT EXISTS (SELECT 1 FROM power_lifecycle x WHERE x.machine_id = m.id AND x.kind = 'deploy'
							AND x.operation = m.deployment_id::text)
				UNION ALL
				SELECT m.id, 'deploy', m.deployment_id::text, now() FROM machines m JOIN machine_power p ON p.machine_id = m.id
					JOIN events e ON e.id = m.deployment_id::uuid
					WHERE m.status = 'erasing' AND p.updated_at <= e.time
						AND NOT EXISTS (SELECT 1 FROM power_lifecycle x WHERE x.machine_id = m.id AND x.kind = 'deploy'
							AND x.operation = m.deployment_id::text)
				UNION ALL
				SELECT m.id, 'release', '', now() FROM machines m WHERE m.status = 'releasing'
					AND NOT EXISTS (SELECT 1 FROM power_lifecycle x WHERE x.machine_id = m.id AND x.kind = 'release' AND NOT x.done)
			ON CONFLICT (machine_id) DO UPDATE SET kind = excluded.kind, operation = excluded.operation, attempts = 0,
				issued = false, next_attempt_at = excluded.next_attempt_at, done = false, last_error = ''`); err != nil {
			return wrap("sync power tasks", err)
		}
		_, err := tx.Exec(ctx, `DELETE FROM power_lifecycle t WHERE NOT EXISTS (SELECT 1 FROM machines m
			WHERE m.id = t.machine_id AND (m.status = 'releasing' AND t.kind = 'release'
				OR m.status IN ('deploying', 'erasing') AND t.kind = 'deploy' AND m.deployment_id::text = t.operation))`)
		return wrap("sync power tasks", err)
	})
}

// LeasePowerTasks leases at most limit due tasks for lease: no other
// attempt takes them meanwhile.
func (db *DB) LeasePowerTasks(ctx context.Context, lease time.Duration, limit int) ([]PowerTask, error) {
	rows, err := db.pool.Query(ctx, `UPDATE power_lifecycle SET lease_until = now() + make_interval(secs => $1), token = gen_random_uuid()
		WHERE machine_id IN (SELECT machine_id FROM power_lifecycle WHERE NOT done AND next_attempt_at <= now()
			AND (lease_until IS NULL OR lease_until < now()) ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
		RETURNING machine_id::text, kind, operation, attempts, issued, token::text,
			coalesce((SELECT m.status FROM machines m WHERE m.id = power_lifecycle.machine_id), '')`, lease.Seconds(), limit)
	if err != nil {
		return nil, wrap("lease power tasks", err)
	}
	tasks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[PowerTask])
	return tasks, wrap("lease power tasks", err)
}

// ErrLeaseLost says a task is no longer the attempt's: the machine moved
// on to another operation, or the lease ran out and another attempt took
// it. The attempt stops sending anything to the BMC.
var ErrLeaseLost = errors.New("the power task is no longer this attempt's")

// StillPowerTask returns ErrLeaseLost when t is no longer the attempt's.
func (db *DB) StillPowerTask(ctx context.Context, t PowerTask) error {
	var one int
	err := db.pool.QueryRow(ctx, `SELECT 1 FROM power_lifecycle WHERE machine_id = $1 AND token = $2 AND kind = $3 AND operation = $4`,
		t.MachineID, t.Token, t.Kind, t.Operation).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrLeaseLost
	}
	return wrap("power task", err)
}

// MarkPowerIssued records, before it is sent, that the attempt sends the
// power on (or cycle): if its outcome is lost, the next attempt only
// checks the power and switches it on, never cycles it.
func (db *DB) MarkPowerIssued(ctx context.Context, t PowerTask) error {
	tag, err := db.pool.Exec(ctx, `UPDATE power_lifecycle SET issued = true
		WHERE machine_id = $1 AND token = $2 AND kind = $3 AND operation = $4`, t.MachineID, t.Token, t.Kind, t.Operation)
	if err != nil {
		return wrap("mark power issued", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrLeaseLost
	}
	return nil
}

// FinishPowerTask ends attempt t: done, or attempts made with the next
// due after delay and why the last failed. The lease ends either way; when
// the machine has moved on to another operation meanwhile, that one's
// task is left as it is (due) and ErrLeaseLost is returned.
func (db *DB) FinishPowerTask(ctx context.Context, t PowerTask, done bool, attempts int, delay time.Duration, lastError string) error {
	var same bool
	err := db.pool.QueryRow(ctx, `UPDATE power_lifecycle SET
			done = CASE WHEN kind = $3 AND operation = $4 THEN $5 ELSE done END,
			attempts = CASE WHEN kind = $3 AND operation = $4 THEN $6 ELSE attempts END,
			next_attempt_at = CASE WHEN kind = $3 AND operation = $4 THEN now() + make_interval(secs => $7) ELSE next_attempt_at END,
			last_error = CASE WHEN kind = $3 AND operation = $4 THEN $8 ELSE last_error END,
			lease_until = NULL, token = NULL
		WHERE machine_id = $1 AND token = $2
		RETURNING kind = $3 AND operation = $4`, t.MachineID, t.Token, t.Kind, t.Operation, done, attempts, delay.Seconds(), lastError).Scan(&same)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && !same {
		return ErrLeaseLost
	}
	return wrap("finish power task", err)
}

// PowerWork is a machine's lifecycle power work as the API shows it.
type PowerWork struct {
	Kind          string    `json:"kind"`
	Attempts      int       `json:"attempts"`
	Done          bool      `json:"done"`
	LastError     string    `json:"last_error,omitempty"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	Running       bool      `json:"running"`
}

// PowerWorkOf returns machine id's lifecycle power work, nil when it has
// none (it is not deploying or releasing with power).
func (db *DB) PowerWorkOf(ctx context.Context, id string) (*PowerWork, error) {
	var w PowerWork
	err := db.pool.QueryRow(ctx, `SELECT kind, attempts, done, last_error, next_attempt_at, coalesce(lease_until > now(), false)
		FROM power_lifecycle WHERE machine_id = $1`, id).Scan(&w.Kind, &w.Attempts, &w.Done, &w.LastError, &w.NextAttemptAt, &w.Running)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("power work", err)
	}
	return &w, nil
}
