package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// scriptsProjection keeps operators' commissioning scripts
// (commissioning_scripts) from the region's commissioning_script_set and
// commissioning_script_deleted events, and what the scripts did on
// machines (commissioning_script_results) from racks'
// agent_script_reported events. It runs after the machines projection: a
// result for a machine the region does not have (never made, or deleted)
// stays in the log and changes nothing, in a rebuild as on the day.
var scriptsProjection = Projection{
	Name:   "commissioning_scripts",
	Tables: []string{"commissioning_script_results", "commissioning_scripts"},
	Apply:  applyScripts,
}

func applyScripts(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeCommissioningScriptSet:
		var d events.CommissioningScriptSet
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`INSERT INTO commissioning_scripts (name, content, sha256, timeout_seconds, description, created_at, updated_at, event_id)
			VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
			ON CONFLICT (name) DO UPDATE SET content = excluded.content, sha256 = excluded.sha256,
				timeout_seconds = excluded.timeout_seconds, description = excluded.description,
				updated_at = excluded.updated_at, event_id = excluded.event_id`,
			d.Name, d.Content, d.SHA256, d.TimeoutSeconds, d.Description, s.Time, s.ID)
	case events.TypeCommissioningScriptDeleted:
		var d events.CommissioningScriptDeleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM commissioning_scripts WHERE name = $1`, d.Name)
	case events.TypeAgentScriptReported:
		// The validator refused a report that breaks the schema, its
		// bounds or names another machine than its stream before it was
		// appended.
		var d events.AgentScriptReported
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if _, err := uuid.Parse(d.MachineID); err != nil {
			return nil
		}
		rackID, err := uuid.Parse(events.RackIDFromSource(s.Source))
		if err != nil {
			return nil
		}
		// Taken only for the machine's commissioning in progress and from
		// the rack that serves its boot (any while it has none), as the
		// follower takes the outcome: another rack, or an agent of
		// another operation, has no results to give. The machines
		// projection is applied in log order before this one, so a
		// rebuild keeps what was kept. An agent's retry is a later report
		// of the same run: the latest in the log stands, whichever order a
		// rebuild sees them in.
		q.Queue(`INSERT INTO commissioning_script_results (machine_id, operation_id, name, exit_code, output, truncated, duration_ms,
				reported_at, rack_id, position, event_id)
			SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM machines
			WHERE id = $1 AND status = 'commissioning' AND deployment_id::text = $2
				AND coalesce(deploy_rack_id, boot_rack_id, $9::uuid) = $9::uuid
			ON CONFLICT (machine_id, operation_id, name) DO UPDATE SET exit_code = excluded.exit_code, output = excluded.output,
				truncated = excluded.truncated, duration_ms = excluded.duration_ms, reported_at = excluded.reported_at,
				rack_id = excluded.rack_id, position = excluded.position, event_id = excluded.event_id
			WHERE commissioning_script_results.position < excluded.position`,
			d.MachineID, d.OperationID, d.Name, d.ExitCode, d.Output, d.Truncated, d.DurationMS, s.Time, rackID.String(), s.Position, s.ID)
	}
	return nil
}

// CommissioningScript is an operator's commissioning script; Content is
// left out of lists.
type CommissioningScript struct {
	Name           string    `json:"name"`
	Content        string    `json:"content,omitempty"`
	SHA256         string    `json:"sha256"`
	Size           int       `json:"size"`
	TimeoutSeconds int       `json:"timeout_seconds"`
	Description    string    `json:"description"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// ScriptResult is what one script did on one commissioning of a machine.
type ScriptResult struct {
	Name       string    `json:"name"`
	ExitCode   int       `json:"exit_code"`
	Output     string    `json:"output"`
	Truncated  bool      `json:"truncated"`
	DurationMS int64     `json:"duration_ms"`
	ReportedAt time.Time `json:"reported_at"`
	RackID     string    `json:"rack_id"`
}

// ScriptResults are the results of a machine's latest commissioning that
// ran scripts, in the order they were reported (the run order).
type ScriptResults struct {
	MachineID   string         `json:"machine_id"`
	OperationID string         `json:"operation_id"`
	Results     []ScriptResult `json:"results"`
}

func scanScript(withContent bool) pgx.RowToFunc[CommissioningScript] {
	return func(r pgx.CollectableRow) (CommissioningScript, error) {
		var s CommissioningScript
		err := r.Scan(&s.Name, &s.Content, &s.SHA256, &s.Size, &s.TimeoutSeconds, &s.Description, &s.CreatedAt, &s.UpdatedAt)
		if !withContent {
			s.Content = ""
		}
		return s, err
	}
}

const selectScript = `SELECT name, content, sha256, octet_length(content), timeout_seconds, description, created_at, updated_at
	FROM commissioning_scripts`

// ListCommissioningScripts returns every script by name; with content,
// their content too (what an agent runs).
func (db *DB) ListCommissioningScripts(ctx context.Context, content bool) ([]CommissioningScript, error) {
	rows, err := db.pool.Query(ctx, selectScript+` ORDER BY name`)
	if err != nil {
		return nil, wrap("list commissioning scripts", err)
	}
	out, err := pgx.CollectRows(rows, scanScript(content))
	return out, wrap("list commissioning scripts", err)
}

// GetCommissioningScript returns a script with its content; ENOTFOUND
// when there is none of that name.
func (db *DB) GetCommissioningScript(ctx context.Context, name string) (CommissioningScript, error) {
	rows, err := db.pool.Query(ctx, selectScript+` WHERE name = $1`, name)
	if err != nil {
		return CommissioningScript{}, wrap("get commissioning script", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, scanScript(true))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, rackplane.Errorf(rackplane.ENOTFOUND, "no commissioning script %q", name)
	}
	return s, wrap("get commissioning script", err)
}

// SaveCommissioningScript appends ev (a set or a delete of script name)
// when the script exists as exists says: a set that creates must find no
// script of that name (ECONFLICT), a replace or a delete must find it
// (ENOTFOUND). Two changes at once: one wins, the other is ECONFLICT.
func (db *DB) SaveCommissioningScript(ctx context.Context, name string, exists bool, ev events.Event) error {
	stream := events.CommissioningScriptStreamName(name)
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		// The stream's version, read with the script: the append at that
		// version fails should another change come in between.
		v, err := db.StreamVersion(ctx, tx, stream)
		if err != nil {
			return err
		}
		var there bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM commissioning_scripts WHERE name = $1)`, name).Scan(&there); err != nil {
			return wrap("save commissioning script", err)
		}
		switch {
		case there && !exists:
			return rackplane.Errorf(rackplane.ECONFLICT, "commissioning script %q exists already", name)
		case !there && exists:
			return rackplane.Errorf(rackplane.ENOTFOUND, "no commissioning script %q", name)
		}
		_, err = db.Emit(ctx, tx, stream, v, ev)
		return err
	})
	var ce *ConflictError
	if errors.As(err, &ce) {
		return rackplane.WrapError(rackplane.ECONFLICT, err, "commissioning script %q was changed meanwhile; try again", name)
	}
	return err
}

// CommissioningResults returns the script results of a machine's latest
// commissioning operation that reported any; ENOTFOUND when there is no
// such machine, and no results when its scripts never ran.
func (db *DB) CommissioningResults(ctx context.Context, id string) (ScriptResults, error) {
	out := ScriptResults{MachineID: id, Results: []ScriptResult{}}
	if _, err := uuid.Parse(id); err != nil {
		return out, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	var op *string
	err := db.pool.QueryRow(ctx, `SELECT (SELECT operation_id FROM commissioning_script_results r WHERE r.machine_id = m.id
			ORDER BY position DESC LIMIT 1) FROM machines m WHERE m.id = $1`, id).Scan(&op)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	if err != nil || op == nil {
		return out, wrap("commissioning results", err)
	}
	out.OperationID = *op
	rows, err := db.pool.Query(ctx, `SELECT name, exit_code, output, truncated, duration_ms, reported_at, rack_id::text
		FROM commissioning_script_results WHERE machine_id = $1 AND operation_id = $2 ORDER BY position`, id, *op)
	if err != nil {
		return out, wrap("commissioning results", err)
	}
	out.Results, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ScriptResult, error) {
		var s ScriptResult
		err := r.Scan(&s.Name, &s.ExitCode, &s.Output, &s.Truncated, &s.DurationMS, &s.ReportedAt, &s.RackID)
		return s, err
	})
	return out, wrap("commissioning results", err)
}
