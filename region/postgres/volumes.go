package postgres

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

var volumesProjection = Projection{
	Name:   "volumes",
	Tables: []string{"volumes"},
	Apply:  applyVolume,
}

// applyVolume projects the region's volume_requested and the racks'
// volume_action_completed. Either may come first: the rack publishes its
// outcome before it answers, and the region records the request once it
// has the answer. So each inserts the row when it is missing, and neither
// lets a late request overwrite a state a rack reported. A rack's report
// only touches a volume that rack has: another rack cannot take it over
// by publishing events about it.
func applyVolume(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeVolumeRequested:
		var d events.VolumeRequested
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		params, err := json.Marshal(nonNilMap(d.Parameters))
		if err != nil {
			return err
		}
		q.Queue(`INSERT INTO volumes (id, machine_id, provider, rack_id, size_mib, state, parameters, last_action, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, 'creating', $6, 'create', $7, $7)
			ON CONFLICT (id) DO UPDATE SET parameters = excluded.parameters, created_at = least(volumes.created_at, excluded.created_at)
			WHERE volumes.rack_id = excluded.rack_id`,
			d.VolumeID, d.MachineID, d.Provider, d.RackID, d.SizeMiB, params, s.Time)
	case events.TypeVolumeActionCompleted:
		var d events.VolumeActionCompleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		rackID := events.RackIDFromSource(s.Source)
		if rackID == "" {
			return nil
		}
		// An event names one snapshot at most; the row keeps them all.
		taken := []events.VolumeSnapshot{}
		if d.OK && d.Action == "snapshot" && d.SnapshotName != "" {
			taken = append(taken, events.VolumeSnapshot{Name: d.SnapshotName, TakenAt: d.StartedAt})
		}
		snaps, err := json.Marshal(taken)
		if err != nil {
			return err
		}
		q.Queue(`INSERT INTO volumes (id, name, machine_id, provider, rack_id, size_mib, state, device, uris,
				last_action, last_ok, last_error_code, last_error, last_output_tail, created_at, updated_at,
				snapshots, open, open_exclusive)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17, $18)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, machine_id = excluded.machine_id,
				size_mib = excluded.size_mib, state = excluded.state, device = excluded.device, uris = excluded.uris,
				last_action = excluded.last_action, last_ok = excluded.last_ok, last_error_code = excluded.last_error_code,
				last_error = excluded.last_error, last_output_tail = excluded.last_output_tail, updated_at = excluded.updated_at,
				snapshots = volumes.snapshots || excluded.snapshots, open = excluded.open, open_exclusive = excluded.open_exclusive
			WHERE volumes.rack_id = excluded.rack_id`,
			d.VolumeID, d.VolumeName, d.Machine, d.Provider, rackID, d.SizeMiB, d.State, d.Device, nz(d.URIs),
			d.Action, d.OK, d.ErrorCode, d.Error, nz(d.OutputTail), s.Time, snaps, d.Open, d.OpenExclusive)
	}
	return nil
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Volume is a volume as the API shows it.
type Volume struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	MachineID      string            `json:"machine_id"`
	Provider       string            `json:"provider"`
	RackID         string            `json:"rack_id"`
	SizeMiB        int64             `json:"size_mib"`
	State          string            `json:"state"`
	Device         string            `json:"device,omitempty"`
	URIs           []string          `json:"uris"`
	Parameters     map[string]string `json:"parameters"`
	LastAction     string            `json:"last_action"`
	LastOK         bool              `json:"last_ok"`
	LastErrorCode  string            `json:"last_error_code,omitempty"`
	LastError      string            `json:"last_error,omitempty"`
	LastOutputTail []string          `json:"last_output_tail,omitempty"`
	// Open is the provider's open state (the open and close actions);
	// Snapshots lists the snapshots taken, oldest first.
	Open          bool                    `json:"open"`
	OpenExclusive bool                    `json:"open_exclusive"`
	Snapshots     []events.VolumeSnapshot `json:"snapshots"`
	CreatedAt     time.Time               `json:"created_at"`
	UpdatedAt     time.Time               `json:"updated_at"`
}

const selectVolume = `SELECT id::text, name, machine_id, provider, rack_id::text, size_mib, state, device, uris, parameters,
	last_action, last_ok, last_error_code, last_error, last_output_tail, open, open_exclusive, snapshots,
	created_at, updated_at FROM volumes`

func scanVolume(row pgx.CollectableRow) (Volume, error) {
	var v Volume
	var params, snaps []byte
	err := row.Scan(&v.ID, &v.Name, &v.MachineID, &v.Provider, &v.RackID, &v.SizeMiB, &v.State, &v.Device, &v.URIs, &params,
		&v.LastAction, &v.LastOK, &v.LastErrorCode, &v.LastError, &v.LastOutputTail, &v.Open, &v.OpenExclusive, &snaps,
		&v.CreatedAt, &v.UpdatedAt)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(snaps, &v.Snapshots); err != nil {
		return v, err
	}
	return v, json.Unmarshal(params, &v.Parameters)
}

// GetVolume returns a volume; ENOTFOUND when there is none.
func (db *DB) GetVolume(ctx context.Context, id string) (Volume, error) {
	k := key(id)
	if !k.Valid {
		return Volume{}, rackplane.Errorf(rackplane.ENOTFOUND, "no volume %s", id)
	}
	rows, err := db.pool.Query(ctx, selectVolume+` WHERE id = $1`, k)
	if err != nil {
		return Volume{}, wrap("get volume", err)
	}
	v, err := pgx.CollectExactlyOneRow(rows, scanVolume)
	if err == pgx.ErrNoRows {
		return v, rackplane.Errorf(rackplane.ENOTFOUND, "no volume %s", id)
	}
	return v, wrap("get volume", err)
}

// ListVolumes returns a machine's volumes, oldest first; removed ones only
// when withRemoved.
func (db *DB) ListVolumes(ctx context.Context, machineID string, withRemoved bool) ([]Volume, error) {
	rows, err := db.pool.Query(ctx, selectVolume+` WHERE machine_id = $1 AND ($2 OR state <> 'removed')
		ORDER BY created_at, id`, machineID, withRemoved)
	if err != nil {
		return nil, wrap("list volumes", err)
	}
	out, err := pgx.CollectRows(rows, scanVolume)
	return out, wrap("list volumes", err)
}

// RequestVolume emits volume_requested.
func (db *DB) RequestVolume(ctx context.Context, ev events.Event) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.Emit(ctx, tx, ev.Subject, ExpectAny, ev)
		return err
	})
}

// ProviderOnRack is what one rack's latest capability snapshot says of a
// storage provider.
type ProviderOnRack struct {
	Name       string                    `json:"-"`
	RackID     string                    `json:"rack_id"`
	RackName   string                    `json:"rack_name"`
	Online     bool                      `json:"online"`
	Valid      bool                      `json:"valid"`
	Reason     string                    `json:"reason,omitempty"`
	Parameters []events.StorageParameter `json:"parameters"`
	// Optional lists the optional actions (snapshot, open, close) the
	// provider has scripts for on this rack.
	Optional []string `json:"optional_actions"`
	Volumes  int      `json:"volumes"` // the rack's volumes not removed, to spread new ones
}

// StorageProviderRacks returns every rack whose latest snapshot lists the
// provider (any provider when it is empty), valid or not, online or not,
// by provider name, then the least loaded rack first.
func (db *DB) StorageProviderRacks(ctx context.Context, provider string) ([]ProviderOnRack, error) {
	rows, err := db.pool.Query(ctx, `SELECT p->>'name', r.id::text, r.name, r.online, coalesce((p->>'valid')::boolean, false),
			coalesce(p->>'reason', ''), coalesce(p->'parameters', '[]'), coalesce(p->'optional_actions', '[]'),
			(SELECT count(*) FROM volumes v WHERE v.rack_id = r.id AND v.state <> 'removed')
		FROM rack_capabilities c JOIN racks r ON r.id = c.rack_id,
			jsonb_array_elements(CASE jsonb_typeof(c.snapshot->'storage_providers') WHEN 'array'
				THEN c.snapshot->'storage_providers' ELSE '[]'::jsonb END) p
		WHERE ($1 = '' OR p->>'name' = $1) AND p->>'name' IS NOT NULL
		ORDER BY 1, 9, r.name, r.id`, provider)
	if err != nil {
		return nil, wrap("storage provider racks", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ProviderOnRack, error) {
		var p ProviderOnRack
		var params, optional []byte
		if err := row.Scan(&p.Name, &p.RackID, &p.RackName, &p.Online, &p.Valid, &p.Reason, &params, &optional, &p.Volumes); err != nil {
			return p, err
		}
		if err := json.Unmarshal(optional, &p.Optional); err != nil {
			return p, err
		}
		return p, json.Unmarshal(params, &p.Parameters)
	})
	return out, wrap("storage provider racks", err)
}
