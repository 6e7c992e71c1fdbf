package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/secrets"
)

// powerProjection keeps machines' power parameters (machine_power) and
// their power state (the power_* columns of machines, whose rows the
// machines projection owns: it runs first, so a rebuild has the row
// before its power events come).
var powerProjection = Projection{
	Name:   "power",
	Tables: []string{"machine_power"},
	Apply:  applyPower,
	// The machines projection's stand-in keeps machines in a rebuild,
	// their power state with them.
	Rebuild: func() RebuildApplier {
		return applyFunc(func(q *pgx.Batch, s Stored) error {
			if s.Type == events.TypePowerActionCompleted || s.Type == events.TypePowerStateChanged {
				return nil
			}
			return applyPower(q, s)
		})
	},
}

func applyPower(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypePowerParametersSet:
		var d events.PowerParametersSet
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		var rackID *string
		if d.RackID != "" {
			rackID = &d.RackID
		}
		extra := d.Extra
		if extra == nil {
			extra = map[string]string{}
		}
		var addr *string
		if a, err := netip.ParseAddr(d.Address); err == nil {
			v := a.WithZone("").String()
			addr = &v
		}
		q.Queue(`INSERT INTO machine_power (machine_id, driver, address, port, username, extra, rack_id, password_set,
				password_fingerprint, updated_at, address_inet) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::inet)
			ON CONFLICT (machine_id) DO UPDATE SET driver = excluded.driver, address = excluded.address, port = excluded.port,
				username = excluded.username, extra = excluded.extra, rack_id = excluded.rack_id, password_set = excluded.password_set,
				password_fingerprint = excluded.password_fingerprint, updated_at = excluded.updated_at, address_inet = excluded.address_inet`,
			d.MachineID, d.Driver, d.Address, d.Port, d.Username, extra, rackID, d.PasswordSet, d.PasswordFingerprint, s.Time, addr)
	case events.TypePowerParametersCleared:
		var d events.PowerParametersCleared
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM machine_power WHERE machine_id = $1`, d.MachineID)
	case events.TypeMachineDeleted:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM machine_power WHERE machine_id = $1`, d.MachineID)
	case events.TypePowerActionCompleted:
		var d events.PowerActionCompleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		// A rack names the machine as it was asked to; only a machine
		// of this region's (a UUID) has a row to update.
		if _, err := uuid.Parse(d.MachineID); err != nil {
			return nil
		}
		rackID, err := uuid.Parse(events.RackIDFromSource(s.Source))
		if err != nil {
			return nil
		}
		at := d.StartedAt.Add(time.Duration(d.DurationMS) * time.Millisecond)
		// Only the rack that drives the machine (its power parameters'
		// rack, else its boot rack) says what its power is: another
		// rack's event stays in the log and changes nothing. An older
		// outcome arriving late does not overwrite a newer one.
		q.Queue(`UPDATE machines m SET power_state = $2, power_checked_at = $3, power_outcome = $4, power_error = $5
			WHERE m.id = $1 AND (m.power_checked_at IS NULL OR m.power_checked_at <= $3)
				AND EXISTS (SELECT 1 FROM machine_power p WHERE p.machine_id = m.id AND power_driving_rack(p, m.boot_rack_id) = $6)`,
			d.MachineID, d.State, at, d.Outcome, d.Error, rackID.String())
	case events.TypePowerStateChanged:
		var d events.PowerStateChanged
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`UPDATE machines SET power_state = $2, power_checked_at = $3, power_outcome = $4, power_error = $5
			WHERE id = $1 AND (power_checked_at IS NULL OR power_checked_at <= $3)`,
			d.MachineID, d.State, d.CheckedAt, d.Outcome, d.Error)
	}
	return nil
}

// PowerSecretName is the name a machine's BMC password is sealed under
// in sealed_secrets; kind "power", so that ResealSecrets treats it as any
// other secret and its fingerprints are of kind power.
func PowerSecretName(machineID string) string { return "power/" + machineID }

// PowerParameters are a machine's power parameters as the region keeps
// them: without the password, which is sealed apart.
type PowerParameters struct {
	// The fields of the last power_parameters_set: RackID "" means the
	// machine's boot rack drives it.
	events.PowerParametersSet
	UpdatedAt time.Time `json:"updated_at"`
}

// SetPower stores the sealed password (nil: none, and any stored one
// goes) and emits power_parameters_set, in one transaction. The event
// must carry sealed's fingerprint, so that what it says is what is
// stored.
func (db *DB) SetPower(ctx context.Context, sealed *secrets.Secret, ev events.Event) error {
	var d events.PowerParametersSet
	if err := ev.DecodeData(&d); err != nil {
		return err
	}
	if sealed != nil && (sealed.Name != PowerSecretName(d.MachineID) || sealed.Fingerprint != d.PasswordFingerprint || !d.PasswordSet) ||
		sealed == nil && d.PasswordSet {
		return fmt.Errorf("power parameters of machine %s: the event does not describe the sealed password", d.MachineID)
	}
	return db.InTx(ctx, func(tx pgx.Tx) error {
		// The machine's row is locked first, so that a machine deleted
		// meanwhile is not given a password.
		if _, err := db.EmitMachine(ctx, tx, d.MachineID, ExpectAny, ev); err != nil {
			return err
		}
		if sealed == nil {
			return deleteSecret(ctx, tx, PowerSecretName(d.MachineID))
		}
		return putSecret(ctx, tx, *sealed, ev.Time)
	})
}

// ClearPower deletes the machine's sealed password and emits
// power_parameters_cleared; ENOTFOUND when no parameters are set.
func (db *DB) ClearPower(ctx context.Context, ev events.Event) error {
	var d events.PowerParametersCleared
	if err := ev.DecodeData(&d); err != nil {
		return err
	}
	return db.InTx(ctx, func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM machine_power WHERE machine_id = $1`, d.MachineID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no power parameters", d.MachineID)
		}
		if err != nil {
			return wrap("clear power", err)
		}
		if _, err := db.EmitMachine(ctx, tx, d.MachineID, ExpectAny, ev); err != nil {
			return err
		}
		return deleteSecret(ctx, tx, PowerSecretName(d.MachineID))
	})
}

func deleteSecret(ctx context.Context, tx pgx.Tx, name string) error {
	_, err := tx.Exec(ctx, `DELETE FROM sealed_secrets WHERE name = $1`, name)
	return wrap("delete secret "+name, err)
}

// GetPower returns a machine's power parameters; ENOTFOUND when none are
// set.
func (db *DB) GetPower(ctx context.Context, machineID string) (PowerParameters, error) {
	var p PowerParameters
	if _, err := uuid.Parse(machineID); err != nil {
		return p, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", machineID)
	}
	err := db.pool.QueryRow(ctx, `SELECT machine_id::text, driver, address, port, username, extra, coalesce(rack_id::text, ''), password_set,
			password_fingerprint, updated_at FROM machine_power WHERE machine_id = $1`, machineID).
		Scan(&p.MachineID, &p.Driver, &p.Address, &p.Port, &p.Username, &p.Extra, &p.RackID, &p.PasswordSet, &p.PasswordFingerprint, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no power parameters: set them with PUT /api/v1/machines/%s/power", machineID, machineID)
	}
	return p, wrap("get power", err)
}

// Why a rack drives a machine (DrivingRack).
const (
	DrivenByNamedRack = "named"  // the power parameters' rack_id
	DrivenBySubnet    = "subnet" // it serves the subnet of the BMC's address
	DrivenByBootRack  = "boot"   // the machine's boot rack
)

// DrivingRack returns the rack that drives machine id's BMC, why
// (DrivenBy...), and for DrivenBySubnet the subnet; "" when no rack does
// (no rack named, no subnet, no boot rack). ENOTFOUND when the machine
// has no power parameters.
func (db *DB) DrivingRack(ctx context.Context, id string) (rackID, why, cidr string, err error) {
	if _, err := uuid.Parse(id); err != nil {
		return "", "", "", rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	err = db.pool.QueryRow(ctx, `SELECT coalesce(power_driving_rack(p, m.boot_rack_id)::text, ''),
			CASE WHEN p.rack_id IS NOT NULL THEN 'named' WHEN sn.rack_id IS NOT NULL THEN 'subnet' ELSE 'boot' END,
			coalesce(sn.cidr::text, '')
		FROM machine_power p JOIN machines m ON m.id = p.machine_id
			LEFT JOIN LATERAL (SELECT s.rack_id, s.cidr FROM subnets s WHERE p.address_inet IS NOT NULL AND p.address_inet <<= s.cidr
				ORDER BY masklen(s.cidr) DESC, s.rack_id LIMIT 1) sn ON true
		WHERE p.machine_id = $1`, id).Scan(&rackID, &why, &cidr)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", "", rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no power parameters: set them with PUT /api/v1/machines/%s/power", id, id)
	}
	if why != DrivenBySubnet {
		cidr = ""
	}
	return rackID, why, cidr, wrap("driving rack", err)
}

// PowerDriverOnRack is a power driver as one rack last reported it.
type PowerDriverOnRack struct {
	RackID    string               `json:"rack_id"`
	RackName  string               `json:"rack_name"`
	Online    bool                 `json:"online"`
	Name      string               `json:"name"`
	Kind      string               `json:"kind"`
	Available bool                 `json:"available"`
	Detail    string               `json:"detail,omitempty"`
	Actions   []events.PowerAction `json:"actions"`
}

// PowerDriverRacks returns every rack's report of driver ("": of every
// driver), from the racks' latest capability snapshots, by driver and
// rack name.
func (db *DB) PowerDriverRacks(ctx context.Context, driver string) ([]PowerDriverOnRack, error) {
	rows, err := db.pool.Query(ctx, `SELECT c.rack_id::text, r.name, r.online, d->>'name', coalesce(d->>'kind', ''),
			coalesce((d->>'available')::boolean, false), coalesce(d->>'detail', ''),
			coalesce((SELECT array_agg(a) FROM jsonb_array_elements_text(CASE jsonb_typeof(d->'actions') WHEN 'array' THEN d->'actions' ELSE '[]'::jsonb END) a), '{}')
		FROM rack_capabilities c JOIN racks r ON r.id = c.rack_id
			CROSS JOIN LATERAL jsonb_array_elements(CASE jsonb_typeof(c.snapshot->'power_drivers') WHEN 'array'
				THEN c.snapshot->'power_drivers' ELSE '[]'::jsonb END) d
		WHERE ($1 = '' OR d->>'name' = $1) AND d->>'name' IS NOT NULL
		ORDER BY d->>'name', r.name`, driver)
	if err != nil {
		return nil, wrap("power driver racks", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PowerDriverOnRack, error) {
		var p PowerDriverOnRack
		var actions []string
		err := r.Scan(&p.RackID, &p.RackName, &p.Online, &p.Name, &p.Kind, &p.Available, &p.Detail, &actions)
		for _, a := range actions {
			p.Actions = append(p.Actions, events.PowerAction(a))
		}
		return p, err
	})
	return out, wrap("power driver racks", err)
}

// RecordPowerRequest emits power_action_requested on the machine's
// stream; it is no change of the machine (machine.IsChange).
func (db *DB) RecordPowerRequest(ctx context.Context, ev events.Event) error {
	var d events.PowerActionRequested
	if err := ev.DecodeData(&d); err != nil {
		return err
	}
	return db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.Emit(ctx, tx, events.MachineStreamName(d.MachineID), ExpectAny, ev)
		return err
	})
}
