package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

// The methods below make DB the machine lifecycle's store
// (machine.Store).
var _ machine.Store = (*DB)(nil)

// AppendMachine appends evs to machine id's stream in a transaction of its
// own, at version expected (machine.NoMachine: a new machine). A machine
// changed meanwhile is machine.ErrChanged; a hostname or MAC another
// machine has is a conflict.
func (db *DB) AppendMachine(ctx context.Context, id string, expected int64, evs []events.Event) error {
	if expected == machine.NoMachine {
		expected = ExpectNoStream
	}
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := db.EmitMachine(ctx, tx, id, expected, evs...); err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Type == events.TypeMachineDeleted {
				// Its BMC password goes with it (the projection drops
				// its power parameters): nothing could use it again.
				return deleteSecret(ctx, tx, PowerSecretName(id))
			}
		}
		return nil
	})
	return machineAppendError(err)
}

// machineAppendError says what an append to a machine's stream that
// failed means to the lifecycle.
func machineAppendError(err error) error {
	var ce *ConflictError
	switch {
	case errors.As(err, &ce):
		return errors.Join(machine.ErrChanged, err)
	case IsUniqueViolation(err):
		return rackplane.WrapError(rackplane.ECONFLICT, err, "hostname or MAC already taken by another machine")
	}
	return err
}

// discoveryLockObject is, with appendLockClass, the advisory lock that
// serialises discoveries: the caps they check then hold across region
// instances.
const discoveryLockObject = 2

// AppendDiscovered creates machine id, discovered on rack rackID, unless a
// cap of lim is reached (machine.Store).
func (db *DB) AppendDiscovered(ctx context.Context, id, rackID string, since time.Time, lim machine.DiscoveryLimits, evs []events.Event) error {
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::int, $2::int)`, appendLockClass, discoveryLockObject); err != nil {
			return wrap("discover: lock", err)
		}
		var perRack, fresh int
		err := tx.QueryRow(ctx, `SELECT
				(SELECT count(*) FROM machines WHERE origin = 'discovered' AND boot_rack_id = $1::uuid AND created_at >= $2),
				(SELECT count(*) FROM machines m WHERE origin = 'discovered' AND (status IN ('new', 'commissioning')
					OR status = 'failed' AND NOT EXISTS (SELECT 1 FROM machine_hardware h WHERE h.machine_id = m.id)))`, rackID, since).Scan(&perRack, &fresh)
		if err != nil {
			return wrap("discover: count", err)
		}
		switch {
		case lim.PerRackPerMinute > 0 && perRack >= lim.PerRackPerMinute:
			return &machine.DiscoveryCapped{Limit: machine.LimitRackRate, Cap: lim.PerRackPerMinute}
		case lim.MaxNew > 0 && fresh >= lim.MaxNew:
			return &machine.DiscoveryCapped{Limit: machine.LimitNew, Cap: lim.MaxNew}
		}
		_, err = db.EmitMachine(ctx, tx, id, ExpectNoStream, evs...)
		return err
	})
	return machineAppendError(err)
}

// RackExists reports whether a rack of that id joined and is in service
// (not retired).
func (db *DB) RackExists(ctx context.Context, id string) (bool, error) {
	var ok bool
	err := db.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM racks WHERE id = $1 AND retired_at IS NULL)`, id).Scan(&ok)
	return ok, wrap("rack exists", err)
}

// BootImages lists the versions of os/release/arch every rack reported.
func (db *DB) BootImages(ctx context.Context, os, release, arch string) ([]machine.BootImage, error) {
	all, err := db.ListImages(ctx, ImageFilter{OS: os, Release: release, Arch: arch})
	if err != nil {
		return nil, err
	}
	out := make([]machine.BootImage, 0, len(all))
	for _, i := range all {
		out = append(out, machine.BootImage{OS: i.OS, Release: i.Release, Arch: i.Arch, Subarch: i.Subarch,
			VersionID: i.VersionID, RackID: i.RackID, RackName: i.RackName, BootURL: i.BootURL, Files: i.Files,
			Version: i.Version, Online: i.Online, Installer: i.Installer, Disk: i.Disk})
	}
	return out, nil
}

// PreseedPin returns the current version of the named preseed.
func (db *DB) PreseedPin(ctx context.Context, name string) (machine.PreseedPin, error) {
	p, err := db.GetPreseed(ctx, name)
	if err != nil {
		return machine.PreseedPin{}, err
	}
	return db.pin(ctx, p)
}

// PreseedPinFor returns the current version of the preseed PreseedFor
// picks.
func (db *DB) PreseedPinFor(ctx context.Context, machineID, os, release, arch string) (machine.PreseedPin, error) {
	p, err := db.PreseedFor(ctx, machineID, os, release, arch)
	if err != nil {
		return machine.PreseedPin{}, err
	}
	return db.pin(ctx, p)
}

// pin is the current version of p with its format.
func (db *DB) pin(ctx context.Context, p Preseed) (machine.PreseedPin, error) {
	v, err := db.GetPreseedVersion(ctx, p.Name, p.CurrentVersion)
	if err != nil {
		return machine.PreseedPin{}, err
	}
	return machine.PreseedPin{Name: p.Name, Version: p.CurrentVersion, Format: v.Format}, nil
}

// VolumeCount counts the volumes a machine holds.
func (db *DB) VolumeCount(ctx context.Context, machineID string) (int, error) {
	vols, err := db.ListVolumes(ctx, machineID, false)
	return len(vols), err
}

// Inventory returns the machine's latest hardware inventory, nil when it
// was never commissioned; ENOTFOUND when there is no such machine.
func (db *DB) Inventory(ctx context.Context, machineID string) (*events.Inventory, error) {
	h, err := db.GetHardware(ctx, machineID)
	if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
		if _, gerr := db.GetMachine(ctx, machineID); gerr != nil {
			return nil, gerr
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &h.Inventory, nil
}
