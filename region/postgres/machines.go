package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

var machinesProjection = Projection{
	Name:   "machines",
	Tables: []string{"machine_macs", "machines", "boot_decisions"},
	Apply:  applyMachine,
	// Machines change at every step of their lifecycle and every power
	// reading.
	Rebuild: newMachinesRebuild,
}

func applyMachine(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeMachineCreated, events.TypeMachineUpdated:
		var d events.MachineState
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		var rackID *string
		if d.BootRackID != "" {
			rackID = &d.BootRackID
		}
		if s.Type == events.TypeMachineCreated {
			q.Queue(`INSERT INTO machines (id, hostname, macs, arch, boot_rack_id, status, origin, created_at, updated_at, version, boot_file)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10)`,
				d.MachineID, d.Hostname, d.MACs, d.Arch, rackID, d.Status, d.Origin, s.Time, s.Version, d.BootFile)
		} else {
			q.Queue(`UPDATE machines SET hostname = $2, macs = $3, arch = $4, boot_rack_id = $5, updated_at = $6, version = $7,
				boot_file = $8 WHERE id = $1`, d.MachineID, d.Hostname, d.MACs, d.Arch, rackID, s.Time, s.Version, d.BootFile)
			q.Queue(`DELETE FROM machine_macs WHERE machine_id = $1`, d.MachineID)
		}
		q.Queue(`INSERT INTO machine_macs (mac, machine_id) SELECT unnest($2::text[]), $1`, d.MachineID, d.MACs)
	case events.TypeMachineDeleted:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM machines WHERE id = $1`, d.MachineID)
	case events.TypeMachineDeploying:
		var d events.Deployment
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		// The deploying event's id names the deployment: an installer's
		// report carries a token derived from it, so a report from an
		// earlier deployment of the same machine cannot end this one.
		q.Queue(`UPDATE machines SET status = 'deploying', status_reason = '', os = $2, release = $3, arch = $4, subarch = $5,
				image_version_id = $6, deploy_rack_id = $7, preseed_name = $8, preseed_version = $9, updated_at = $10, version = $11,
				deployment_id = $12, deploy_started_at = $10, deployed_at = NULL
			WHERE id = $1`, d.MachineID, d.OS, d.Release, d.Arch, d.Subarch, d.ImageVersionID, d.RackID,
			d.PreseedName, d.PreseedVersion, s.Time, s.Version, s.ID)
	case events.TypeMachineCommissioning, events.TypeMachineErasing:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		// The commissioning event's id names the operation, as the
		// deploying event's names a deployment: the agent's outcome is
		// taken only for it. Commissioning (or erasing, a release's)
		// ends whatever deployment the machine had, as a release does: it
		// ends ready, not deployed, and its boot is the operation's rack's.
		q.Queue(`UPDATE machines SET status = $4, status_reason = '', os = '', release = '', subarch = '', image_version_id = '',
				deploy_rack_id = NULL, preseed_name = '', preseed_version = 0, updated_at = $2, version = $3,
				deployment_id = $5, deploy_started_at = NULL, deployed_at = NULL
			WHERE id = $1`, d.MachineID, s.Time, s.Version, statusAfter(s.Type), s.ID)
	case events.TypeMachineReleased:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`UPDATE machines SET status = $4, status_reason = '', os = '', release = '', subarch = '', image_version_id = '',
				deploy_rack_id = NULL, preseed_name = '', preseed_version = 0, updated_at = $2, version = $3,
				deployment_id = NULL, deploy_started_at = NULL, deployed_at = NULL
			WHERE id = $1`, d.MachineID, s.Time, s.Version, statusAfter(s.Type))
	case events.TypeMachineDeployed, events.TypeMachineFailed, events.TypeMachineBroken, events.TypeMachineFixed,
		events.TypeMachineCommissioned, events.TypeMachineReleasing,
		events.TypeMachineRescueEntered, events.TypeMachineRescueExited:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		// Only a failure or a break has a reason worth showing beside the
		// status; every other change clears the last one.
		reason := ""
		if s.Type == events.TypeMachineFailed || s.Type == events.TypeMachineBroken {
			reason = d.Reason
		}
		// A release ends the deployment at its start: a machine that
		// breaks while releasing is not deployed when fixed.
		q.Queue(`UPDATE machines SET status = CASE WHEN deployed_at IS NULL THEN $2 ELSE $3 END, status_reason = $4,
				deployed_at = CASE WHEN $5 THEN $6 WHEN $8 THEN NULL ELSE deployed_at END, updated_at = $6, version = $7
			WHERE id = $1`, d.MachineID, statusAfter(s.Type), statusAfterDeployed(s.Type), reason,
			s.Type == events.TypeMachineDeployed, s.Time, s.Version, s.Type == events.TypeMachineReleasing)
	case events.TypeMachineTagsSet:
		var d events.MachineTags
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`UPDATE machines SET tags = $2, updated_at = $3, version = $4 WHERE id = $1`, d.MachineID, d.Tags, s.Time, s.Version)
	case events.TypeBootDecisionSet:
		var d events.BootDecision
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		var mid *string
		if d.MachineID != "" {
			mid = &d.MachineID
		}
		q.Queue(`INSERT INTO boot_decisions (mac, machine_id, decision, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (mac) DO UPDATE SET machine_id = excluded.machine_id, decision = excluded.decision,
				updated_at = excluded.updated_at`, d.MAC, mid, []byte(s.Data), s.Time)
	case events.TypeBootDecisionCleared:
		var d events.BootDecisionCleared
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM boot_decisions WHERE mac = $1`, d.MAC)
	}
	// A machine's version is the stream version of its last change; what
	// counts as a change is the lifecycle's to say. Most changes set it
	// above already (and a deleted machine has none): writing the row
	// again would only add a version of it for nothing.
	if versionSet(s) {
		return nil
	}
	if id, ok := strings.CutPrefix(s.Subject, events.MachineStreamPrefix); ok && machine.IsChange(s.Type) && s.Source == events.RegionSource {
		if _, err := uuid.Parse(id); err == nil {
			q.Queue(`UPDATE machines SET version = greatest(version, $2) WHERE id = $1`, id, s.Version)
		}
	}
	return nil
}

// statusAfter and statusAfterDeployed are the status an event leaves a
// machine in that was never deployed, and one that was (see
// rackplane.Machine.DeployedAt), as the lifecycle decides it.
func statusAfter(typ string) string {
	st, _ := machine.StatusAfter(rackplane.Machine{}, typ)
	return st
}

func statusAfterDeployed(typ string) string {
	t := time.Time{}
	st, _ := machine.StatusAfter(rackplane.Machine{DeployedAt: &t}, typ)
	return st
}

// EmitMachine emits evs on machine id's stream when the machine is at
// version expected (its Version, which counts only changes; see
// machine.IsChange) or at any version with ExpectAny. ExpectNoStream creates
// it. The machine's row is locked for the rest of tx, so two changes of
// one machine are serialised, while a rack's boot events on the same
// stream neither wait for it nor make it conflict.
func (db *DB) EmitMachine(ctx context.Context, tx pgx.Tx, id string, expected int64, evs ...events.Event) ([]Appended, error) {
	stream := events.MachineStreamName(id)
	if expected == ExpectNoStream {
		return db.Emit(ctx, tx, stream, ExpectNoStream, evs...)
	}
	var version int64
	err := tx.QueryRow(ctx, `SELECT version FROM machines WHERE id = $1 FOR UPDATE`, id).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s not found", id)
	}
	if err != nil {
		return nil, wrap("emit machine: lock", err)
	}
	if expected != ExpectAny && version != expected {
		// A retried change whose events are all in already is a no-op,
		// as with Append.
		if out, fresh, err := db.dedupe(ctx, tx, evs); err != nil || len(fresh) == 0 {
			return out, err
		}
		return nil, rackplane.WrapError(rackplane.ECONFLICT, &ConflictError{stream, expected},
			"%s was changed by someone else", stream)
	}
	return db.Emit(ctx, tx, stream, ExpectAny, evs...)
}

// selectMachine reads machines with their hardware summary, from a
// subquery so that the machines' column names stay unambiguous in the
// conditions callers append.
const selectMachine = `SELECT id::text, hostname, macs, arch, boot_rack_id::text, status, status_reason, origin, os, release, subarch,
	image_version_id, deploy_rack_id::text, preseed_name, preseed_version, deployment_id::text, deploy_started_at,
	deployed_at, created_at, updated_at, version, boot_file, power_state, power_checked_at, power_outcome, power_error, tags,
	(SELECT jsonb_build_object('cores', h.cpu_cores, 'threads', h.cpu_threads, 'memory_bytes', h.memory_bytes, 'disks', h.disk_count,
		'disk_bytes', h.disk_bytes, 'firmware', h.firmware) FROM machine_hardware h WHERE h.machine_id = machines.id)
	FROM machines`

// GetMachineSQL is the statement GetMachine runs ($1 the machine's id as
// a uuid), and ListMachinesSQL the one a list without filters runs ($1
// the hostname after which the page begins, $2 its size): an index scan
// of the primary key and of the hostnames' unique index, whatever the
// table's size. Benchmarks run them against the API's requests.
const (
	GetMachineSQL   = selectMachine + ` WHERE id = $1`
	ListMachinesSQL = selectMachine + ` WHERE hostname > $1 ORDER BY hostname LIMIT $2`
)

func scanMachine(row pgx.CollectableRow) (rackplane.Machine, error) {
	var m rackplane.Machine
	err := scanMachineRow(row, &m, nil)
	return m, err
}

// machineDest appends to dest where selectMachine's columns go in m.
func machineDest(m *rackplane.Machine, dest []any) []any {
	return append(dest, &m.ID, &m.Hostname, &m.MACs, &m.Arch, &m.BootRackID, &m.Status, &m.StatusReason, &m.Origin, &m.OS, &m.Release,
		&m.Subarch, &m.ImageVersionID, &m.DeployRackID, &m.PreseedName, &m.PreseedVersion, &m.DeploymentID, &m.DeployStartedAt,
		&m.DeployedAt, &m.CreatedAt, &m.UpdatedAt, &m.Version, &m.BootFile, &m.PowerState, &m.PowerCheckedAt, &m.PowerOutcome, &m.PowerError,
		&m.Tags, &m.Hardware)
}

// scanMachines reads a page of machines into a slice made once for
// limit of them, each row scanned in place: a page costs its strings
// and little else.
func scanMachines(rows pgx.Rows, limit int) ([]rackplane.Machine, error) {
	defer rows.Close()
	out := make([]rackplane.Machine, 0, limit)
	dest := make([]any, 0, 28)
	for rows.Next() {
		out = append(out, rackplane.Machine{})
		if err := scanMachineRow(rows, &out[len(out)-1], dest[:0]); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// GetMachine returns a machine; ENOTFOUND when there is none.
func (db *DB) GetMachine(ctx context.Context, id string) (rackplane.Machine, error) {
	// A key that is no UUID names no machine; checked here, the lookup
	// can use the primary key rather than cast every row's.
	k := key(id)
	if !k.Valid {
		return rackplane.Machine{}, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	rows, err := db.pool.Query(ctx, GetMachineSQL, k)
	if err != nil {
		return rackplane.Machine{}, wrap("get machine", err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, scanMachine)
	if err == pgx.ErrNoRows {
		return m, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	return m, wrap("get machine", err)
}

// MachineByMAC returns the machine with that MAC; ENOTFOUND when none.
func (db *DB) MachineByMAC(ctx context.Context, mac string) (rackplane.Machine, error) {
	rows, err := db.pool.Query(ctx, selectMachine+` WHERE id = (SELECT machine_id FROM machine_macs WHERE mac = $1)`, mac)
	if err != nil {
		return rackplane.Machine{}, wrap("machine by mac", err)
	}
	m, err := pgx.CollectExactlyOneRow(rows, scanMachine)
	if err == pgx.ErrNoRows {
		return m, rackplane.Errorf(rackplane.ENOTFOUND, "no machine with MAC %s", mac)
	}
	return m, wrap("machine by mac", err)
}

// HostnamesByMAC returns, by MAC, the hostname of the machine that has
// each of macs (canonical), in one query; a MAC no machine has is not in
// the map.
func (db *DB) HostnamesByMAC(ctx context.Context, macs []string) (map[string]string, error) {
	rows, err := db.pool.Query(ctx, `SELECT mm.mac, m.hostname FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id
		WHERE mm.mac = ANY($1::text[])`, macs)
	if err != nil {
		return nil, wrap("hostnames by mac", err)
	}
	out := map[string]string{}
	var mac, hostname string
	_, err = pgx.ForEachRow(rows, []any{&mac, &hostname}, func() error {
		out[mac] = hostname
		return nil
	})
	return out, wrap("hostnames by mac", err)
}

// ListMachines returns the machines f matches by hostname, after the
// cursor (a hostname: they are unique, so the page ends where the next
// begins whatever the filters).
func (db *DB) ListMachines(ctx context.Context, f machine.Filter) ([]rackplane.Machine, error) {
	sql, args := listMachinesQuery(f)
	rows, err := db.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, wrap("list machines", err)
	}
	// The page's size is the last argument.
	out, err := scanMachines(rows, args[len(args)-1].(int))
	return out, wrap("list machines", err)
}

// listMachinesQuery is ListMachines' statement for f and its arguments:
// ListMachinesSQL without filters. Each combination of filters is its
// own statement text, prepared once per connection like any other.
func listMachinesQuery(f machine.Filter) (string, []any) {
	if f.Limit <= 0 || f.Limit > machine.MaxListLimit {
		f.Limit = machine.DefaultListLimit
	}
	var where []string
	var args []any
	cond := func(sql string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(sql, "$?", fmt.Sprintf("$%d", len(args))))
	}
	cond(`hostname > $?`, f.After)
	if f.Status != "" {
		cond(`status = $?`, f.Status)
	}
	if f.Hostname != "" {
		cond(`strpos(hostname, $?) > 0`, f.Hostname)
	}
	if f.MAC != "" {
		cond(`$? = ANY(macs)`, f.MAC)
	}
	if f.OS != "" {
		cond(`os = $?`, f.OS)
	}
	if len(f.Tags) > 0 {
		cond(`tags @> $?::text[]`, f.Tags)
	}
	if f.Arch != "" {
		// The inventory's architecture when there is one: a discovered
		// machine is amd64 until its hardware says otherwise.
		cond(`coalesce((SELECT h.arch FROM machine_hardware h WHERE h.machine_id = machines.id), arch) = $?`, f.Arch)
	}
	var hw []string
	hwCond := func(col string, v int64) {
		if v > 0 {
			args = append(args, v)
			hw = append(hw, fmt.Sprintf("h.%s >= $%d", col, len(args)))
		}
	}
	hwCond("cpu_cores", int64(f.MinCores))
	hwCond("memory_bytes", f.MinMemory)
	hwCond("disk_count", int64(f.MinDisks))
	hwCond("largest_disk_bytes", f.MinDiskSize)
	if len(hw) > 0 {
		where = append(where, `EXISTS (SELECT 1 FROM machine_hardware h WHERE h.machine_id = machines.id AND `+strings.Join(hw, " AND ")+`)`)
	}
	args = append(args, f.Limit)
	return selectMachine + ` WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY hostname LIMIT $%d`, len(args)), args
}

// BootDecision returns the decision for a MAC, or nil when there is none.
func (db *DB) BootDecision(ctx context.Context, mac string) (*events.BootDecision, error) {
	var raw []byte
	err := db.pool.QueryRow(ctx, `SELECT decision FROM boot_decisions WHERE mac = $1`, mac).Scan(&raw)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("boot decision", err)
	}
	var d events.BootDecision
	return &d, wrap("boot decision", json.Unmarshal(raw, &d))
}

// IsUniqueViolation reports whether err is Postgres refusing a duplicate.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// OverdueCommissionings returns the machines still commissioning whose
// commissioning (the event deployment_id names) began before before,
// oldest first, at most limit. Few machines commission at once, and the
// event is found by its unique id.
func (db *DB) OverdueCommissionings(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error) {
	return db.overdueOperations(ctx, events.MachineCommissioning, before, limit)
}

// OverdueErasings returns the machines still erasing whose erase began
// before before, as OverdueCommissionings.
func (db *DB) OverdueErasings(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error) {
	return db.overdueOperations(ctx, events.MachineErasing, before, limit)
}

// overdueOperations returns the machines in status whose operation (the
// event deployment_id names) began before before, oldest first.
func (db *DB) overdueOperations(ctx context.Context, status string, before time.Time, limit int) ([]rackplane.Machine, error) {
	rows, err := db.pool.Query(ctx, `SELECT m.* FROM (`+selectMachine+` WHERE status = $3) m
		JOIN events e ON e.id = m.deployment_id::uuid WHERE e.time < $1 ORDER BY e.time LIMIT $2`, before, limit, status)
	if err != nil {
		return nil, wrap("overdue "+status, err)
	}
	ms, err := pgx.CollectRows(rows, scanMachine)
	return ms, wrap("overdue "+status, err)
}

// OverdueDeployments returns the machines still deploying that started
// before before, oldest first, at most limit.
func (db *DB) OverdueDeployments(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error) {
	rows, err := db.pool.Query(ctx, selectMachine+` WHERE status = 'deploying' AND deploy_started_at < $1
		ORDER BY deploy_started_at LIMIT $2`, before, limit)
	if err != nil {
		return nil, wrap("overdue deployments", err)
	}
	ms, err := pgx.CollectRows(rows, scanMachine)
	return ms, wrap("overdue deployments", err)
}

// versionSet says whether applyMachine's statement for s already set the
// version of the machine of s's stream to s's: the types whose statement
// sets version = s.Version for the machine their data names, when that
// is the stream's machine (as the lifecycle emits them), or a deletion.
func versionSet(s Stored) bool {
	switch s.Type {
	case events.TypeBootDecisionSet, events.TypeBootDecisionCleared:
		return false
	}
	if !machine.IsChange(s.Type) {
		return false
	}
	var d struct {
		MachineID string `json:"machine_id"`
	}
	if err := s.DecodeData(&d); err != nil {
		return false
	}
	return events.MachineStreamName(d.MachineID) == s.Subject
}
