package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// RackRetirement is what retiring a rack did.
type RackRetirement struct {
	RackID    string    `json:"rack_id"`
	Name      string    `json:"name"`
	RetiredAt time.Time `json:"retired_at"`
	RetiredBy string    `json:"retired_by"`
	// Credential is the rack's NATS credential, revoked with it; nil for
	// a rack that never joined through the auth callout.
	Credential *RackCredential `json:"credential,omitempty"`
	// AlreadyRetired says the rack was retired before: nothing changed.
	AlreadyRetired bool `json:"already_retired,omitempty"`
}

// dependentsShown is how many machines (subnets, volumes) a refusal names;
// it counts the rest.
const dependentsShown = 5

// RetireRack retires rack rackID on by's word, with reason (optional):
// rack_retired on its stream, and its NATS credential revoked for good
// (rack_revoked) in the same transaction. It is refused (ECONFLICT, the
// message saying why and what to do) while the rack is online, and while
// machines (their boot rack, deploy rack or power driving rack), managed
// DHCP subnets or volumes depend on it: retiring it would leave them with
// a rack that never answers. Retiring a retired rack changes nothing
// (AlreadyRetired); an unknown rack is ENOTFOUND.
//
// The rack's stream row is locked first, then its row of racks, in the
// order an append of its events takes them, so that a rack event
// ingested meanwhile waits rather than deadlocks, and a liveness
// transition decided on the state before fails its version check.
func (db *DB) RetireRack(ctx context.Context, rackID, by, reason string, now time.Time) (RackRetirement, error) {
	if _, err := uuid.Parse(rackID); err != nil {
		return RackRetirement{}, rackplane.Errorf(rackplane.EINVALID, "rack id %q is not a UUID", rackID)
	}
	if by == "" || len(by) > 256 {
		return RackRetirement{}, rackplane.Errorf(rackplane.EINVALID, "who retires a rack must be 1 to 256 characters")
	}
	if len(reason) > 512 {
		return RackRetirement{}, rackplane.Errorf(rackplane.EINVALID, "the reason for retiring a rack is at most 512 bytes")
	}
	now = now.UTC().Truncate(time.Microsecond)
	stream := events.RackStreamName(rackID)
	var res RackRetirement
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		res = RackRetirement{RackID: rackID}
		version := ExpectAny
		err := tx.QueryRow(ctx, `SELECT version FROM streams WHERE name = $1 FOR UPDATE`, stream).Scan(&version)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return wrap("retire rack: lock its stream", err)
		}
		var online bool
		var retiredAt, lastHeartbeat *time.Time
		err = tx.QueryRow(ctx, `SELECT name, online, retired_at, retired_by, last_heartbeat FROM racks WHERE id = $1 FOR UPDATE`, rackID).
			Scan(&res.Name, &online, &retiredAt, &res.RetiredBy, &lastHeartbeat)
		if errors.Is(err, pgx.ErrNoRows) {
			return rackplane.Errorf(rackplane.ENOTFOUND, "no rack %s", rackID)
		}
		if err != nil {
			return wrap("retire rack", err)
		}
		if retiredAt != nil {
			res.RetiredAt, res.AlreadyRetired = *retiredAt, true
			return nil
		}
		if online {
			heard := "no heartbeat recorded"
			if lastHeartbeat != nil {
				heard = "last heartbeat " + lastHeartbeat.UTC().Format(time.RFC3339)
			}
			return rackplane.Errorf(rackplane.ECONFLICT, "rack %s (%s) is online (%s): stop its rackd first; "+
				"the region marks it offline after missed heartbeats, and it can be retired then", res.Name, rackID, heard)
		}
		if uses, err := rackUses(ctx, tx, rackID); err != nil {
			return err
		} else if uses != "" {
			return rackplane.Errorf(rackplane.ECONFLICT, "rack %s (%s) is still in use: %s. Move them to another rack "+
				"(a machine's boot_rack_id, its power parameters' rack_id, a subnet's rack_id), release or delete them, then retire it",
				res.Name, rackID, uses)
		}
		cred, found, revoked, err := revokeCredential(ctx, tx, rackID, by, now)
		if err != nil {
			return err
		}
		if found {
			res.Credential = &cred
		}
		retired, err := events.New(events.RegionSource, events.TypeRackRetired, stream, now,
			events.RackRetired{RackID: rackID, Name: res.Name, Reason: reason})
		if err != nil {
			return err
		}
		retired.Actor = by
		evs := []events.Event{retired}
		if revoked != nil {
			evs = []events.Event{*revoked, retired}
		}
		if _, err := db.Emit(ctx, tx, stream, version, evs...); err != nil {
			return err
		}
		res.RetiredAt, res.RetiredBy = now, by
		return nil
	})
	return res, err
}

// rackUses says what depends on rack rackID ("" when nothing does):
// machines that boot, deploy or are powered through it, the subnets it
// serves and the volumes it holds, a few of each by name with the count.
func rackUses(ctx context.Context, tx pgx.Tx, rackID string) (string, error) {
	var parts []string
	// A machine without power parameters is powered through no rack:
	// power_driving_rack would give its boot rack, which is counted as
	// such already.
	rows, err := tx.Query(ctx, `SELECT m.hostname, count(*) OVER (),
			coalesce(m.boot_rack_id = $1, false),
			coalesce(m.deploy_rack_id = $1, false),
			coalesce(p.machine_id IS NOT NULL AND power_driving_rack(p, m.boot_rack_id) = $1, false)
		FROM machines m LEFT JOIN machine_power p ON p.machine_id = m.id
		WHERE m.boot_rack_id = $1 OR m.deploy_rack_id = $1
			OR (p.machine_id IS NOT NULL AND power_driving_rack(p, m.boot_rack_id) = $1)
		ORDER BY m.hostname LIMIT $2`, rackID, dependentsShown)
	if err != nil {
		return "", wrap("retire rack: machines", err)
	}
	var names []string
	var total int
	var host string
	var boots, deploys, powers bool
	_, err = pgx.ForEachRow(rows, []any{&host, &total, &boots, &deploys, &powers}, func() error {
		var how []string
		if boots {
			how = append(how, "boots from it")
		}
		if deploys {
			how = append(how, "deploys from it")
		}
		if powers {
			how = append(how, "powered through it")
		}
		names = append(names, host+" ("+strings.Join(how, ", ")+")")
		return nil
	})
	if err != nil {
		return "", wrap("retire rack: machines", err)
	}
	if total > 0 {
		parts = append(parts, counted(total, "machine depends", "machines depend")+" on it: "+some(names, total))
	}
	for _, q := range []struct{ one, many, sql string }{
		{"subnet is", "subnets are", `SELECT cidr::text, count(*) OVER () FROM subnets WHERE rack_id = $1 ORDER BY cidr LIMIT $2`},
		{"volume is", "volumes are", `SELECT coalesce(nullif(name, ''), id::text), count(*) OVER () FROM volumes
			WHERE rack_id = $1 AND state <> 'removed' ORDER BY created_at, id LIMIT $2`},
	} {
		rows, err := tx.Query(ctx, q.sql, rackID, dependentsShown)
		if err != nil {
			return "", wrap("retire rack: "+q.many, err)
		}
		var names []string
		var name string
		total = 0
		if _, err := pgx.ForEachRow(rows, []any{&name, &total}, func() error { names = append(names, name); return nil }); err != nil {
			return "", wrap("retire rack: "+q.many, err)
		}
		if total > 0 {
			served := " served by it: "
			if q.one == "volume is" {
				served = " on it: "
			}
			parts = append(parts, counted(total, q.one, q.many)+served+some(names, total))
		}
	}
	return strings.Join(parts, "; "), nil
}

// counted is "1 machine depends" or "3 machines depend".
func counted(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// some lists names, and how many more there are of total.
func some(names []string, total int) string {
	s := strings.Join(names, ", ")
	if more := total - len(names); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}
