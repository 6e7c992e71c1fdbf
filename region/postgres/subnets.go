package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

var subnetsProjection = Projection{
	Name:   "subnets",
	Tables: []string{"subnets"},
	Apply:  applySubnet,
}

func applySubnet(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeSubnetSet:
		var d events.SubnetSet
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		doc, err := json.Marshal(d.Subnet)
		if err != nil {
			return err
		}
		q.Queue(`INSERT INTO subnets (id, rack_id, cidr, doc, created_at, updated_at, version)
			VALUES ($1, $2, $3, $4, $5, $5, $6)
			ON CONFLICT (id) DO UPDATE SET rack_id = excluded.rack_id, cidr = excluded.cidr, doc = excluded.doc,
				updated_at = excluded.updated_at, version = excluded.version`,
			d.SubnetID, d.RackID, d.CIDR.String(), doc, s.Time, s.Version)
	case events.TypeSubnetDeleted:
		var d events.SubnetDeleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if d.MovedToRackID == "" { // a move is a subnet_set next
			q.Queue(`DELETE FROM subnets WHERE id = $1`, d.SubnetID)
		}
	}
	return nil
}

// Subnet is a subnet of managed DHCP as the region keeps it.
type Subnet struct {
	ID     string `json:"id"`
	RackID string `json:"rack_id"`
	events.Subnet
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Version counts the subnet's changes; it is the API's ETag.
	Version int64 `json:"version"`
}

const selectSubnet = `SELECT id::text, rack_id::text, doc, created_at, updated_at, version FROM subnets`

func scanSubnet(row pgx.CollectableRow) (Subnet, error) {
	var s Subnet
	var doc []byte
	if err := row.Scan(&s.ID, &s.RackID, &doc, &s.CreatedAt, &s.UpdatedAt, &s.Version); err != nil {
		return s, err
	}
	return s, json.Unmarshal(doc, &s.Subnet)
}

// GetSubnet returns a subnet; ENOTFOUND when there is none.
func (db *DB) GetSubnet(ctx context.Context, id string) (Subnet, error) {
	if _, err := uuid.Parse(id); err != nil {
		return Subnet{}, rackplane.Errorf(rackplane.ENOTFOUND, "no subnet %s", id)
	}
	rows, err := db.pool.Query(ctx, selectSubnet+` WHERE id = $1`, id)
	if err != nil {
		return Subnet{}, wrap("get subnet", err)
	}
	s, err := pgx.CollectExactlyOneRow(rows, scanSubnet)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, rackplane.Errorf(rackplane.ENOTFOUND, "no subnet %s", id)
	}
	return s, wrap("get subnet", err)
}

// ListSubnets returns the subnets of rack rackID ("": of every rack), by
// rack and address.
func (db *DB) ListSubnets(ctx context.Context, rackID string) ([]Subnet, error) {
	rows, err := db.pool.Query(ctx, selectSubnet+` WHERE $1 OR rack_id = $2 ORDER BY rack_id, cidr`, rackID == "", key(rackID))
	if err != nil {
		return nil, wrap("list subnets", err)
	}
	out, err := pgx.CollectRows(rows, scanSubnet)
	return out, wrap("list subnets", err)
}

// subnetLockObject is the advisory lock (with appendLockClass) that
// serialises subnet changes, so that two subnets overlapping on one rack
// cannot both pass the overlap check at once. Subnets change rarely.
const subnetLockObject = 2

// SaveSubnet emits ev, a subnet_set or subnet_deleted, on the subnet's
// stream at version expected (ExpectNoStream: a new subnet), when the rack
// it names exists and no other subnet of that rack overlaps it. A
// subnet_set that moves the subnet to another rack is preceded by a
// subnet_deleted for the rack it leaves, which hears of nothing else. A
// stream at another version is an ECONFLICT wrapping *ConflictError.
func (db *DB) SaveSubnet(ctx context.Context, expected int64, ev events.Event) error {
	return db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, appendLockClass, subnetLockObject); err != nil {
			return wrap("save subnet: lock", err)
		}
		if ev.Type == events.TypeSubnetSet {
			var d events.SubnetSet
			if err := ev.DecodeData(&d); err != nil {
				return err
			}
			// FOR SHARE: a retirement of the rack (which locks its row to
			// look for what it serves) either sees this subnet or has
			// retired the rack before this reads it.
			var ok bool
			err := tx.QueryRow(ctx, `SELECT true FROM racks WHERE id = $1 AND retired_at IS NULL FOR SHARE`, key(d.RackID)).Scan(&ok)
			if errors.Is(err, pgx.ErrNoRows) {
				return rackplane.Errorf(rackplane.EINVALID, "rack_id: no rack %s in service", d.RackID)
			}
			if err != nil {
				return wrap("save subnet: rack", err)
			}
			rows, err := tx.Query(ctx, `SELECT id::text || ' (' || cidr::text || ')' FROM subnets
				WHERE rack_id = $1 AND cidr && $2::cidr AND id IS DISTINCT FROM $3 ORDER BY cidr`, key(d.RackID), d.CIDR.String(), key(d.SubnetID))
			if err != nil {
				return wrap("save subnet: overlap", err)
			}
			clash, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return wrap("save subnet: overlap", err)
			}
			if len(clash) > 0 {
				return rackplane.Errorf(rackplane.ECONFLICT, "cidr %s overlaps subnet %s on the same rack; a rack serves each address from one subnet",
					d.CIDR, strings.Join(clash, ", "))
			}
		}
		evs := []events.Event{ev}
		if ev.Type == events.TypeSubnetSet {
			var d events.SubnetSet
			if err := ev.DecodeData(&d); err != nil {
				return err
			}
			var was, cidr string
			err := tx.QueryRow(ctx, `SELECT rack_id::text, cidr::text FROM subnets WHERE id = $1`, key(d.SubnetID)).Scan(&was, &cidr)
			if err != nil && err != pgx.ErrNoRows {
				return wrap("save subnet: its rack", err)
			}
			if err == nil && was != d.RackID {
				moved, err := events.New(events.RegionSource, events.TypeSubnetDeleted, ev.Subject, ev.Time,
					events.SubnetDeleted{SubnetID: d.SubnetID, RackID: was, CIDR: cidr, MovedToRackID: d.RackID})
				if err != nil {
					return err
				}
				moved.Actor, moved.CorrelationID = ev.Actor, ev.CorrelationID
				evs = []events.Event{moved, ev.CausedBy(moved)}
			}
		}
		_, err := db.Emit(ctx, tx, ev.Subject, expected, evs...)
		return err
	})
}
