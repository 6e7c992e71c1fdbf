package postgres

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
)

// leaseKey is dhcp_leases' primary key.
type leaseKey struct {
	rack    uuid.UUID
	mac, ip string
}

// leaseRow is the rest of a dhcp_leases row.
type leaseRow struct {
	subnet     *string
	hostname   string
	lastAction string
	expires    *time.Time
	count      int64
	at         time.Time
}

// leasesRebuild stands in for applyLeases in a rebuild: it keeps the
// table in memory, as applyLeases' statements would leave it, and writes
// the rows that changed at each Flush. A rack's leases change with nearly
// every report it makes, so the log holds many changes per row.
type leasesRebuild struct {
	// rows by rack: a report's sweep looks at its rack's alone.
	rows  map[uuid.UUID]map[leaseKey]*leaseRow
	dirty map[leaseKey]bool
	// The racks with a row, and the retired ones among them: a retired
	// rack's leases are not taken (applyLeases asks the racks table).
	racks   map[uuid.UUID]bool
	retired map[uuid.UUID]bool
}

func newLeasesRebuild() RebuildApplier {
	return &leasesRebuild{rows: map[uuid.UUID]map[leaseKey]*leaseRow{}, dirty: map[leaseKey]bool{},
		racks: map[uuid.UUID]bool{}, retired: map[uuid.UUID]bool{}}
}

func (l *leasesRebuild) Load(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, retired_at IS NOT NULL FROM racks`)
	if err != nil {
		return wrap("load racks", err)
	}
	for rows.Next() {
		var id uuid.UUID
		var retired bool
		if err := rows.Scan(&id, &retired); err != nil {
			rows.Close()
			return wrap("load racks", err)
		}
		l.racks[id], l.retired[id] = true, retired
	}
	if err := rows.Err(); err != nil {
		return wrap("load racks", err)
	}
	rows, err = tx.Query(ctx, `SELECT rack_id, mac, host(ip), subnet::text, hostname, last_action, expires, count, at FROM dhcp_leases`)
	if err != nil {
		return wrap("load leases", err)
	}
	for rows.Next() {
		var k leaseKey
		r := &leaseRow{}
		if err := rows.Scan(&k.rack, &k.mac, &k.ip, &r.subnet, &r.hostname, &r.lastAction, &r.expires, &r.count, &r.at); err != nil {
			rows.Close()
			return wrap("load leases", err)
		}
		l.rack(k.rack)[k] = r
	}
	return wrap("load leases", rows.Err())
}

func (l *leasesRebuild) Apply(_ *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeRackRegistered:
		if id, err := uuid.Parse(events.RackIDFromSource(s.Source)); err == nil {
			l.racks[id] = true
		}
		return nil
	case events.TypeRackRetired:
		var d events.RackRetired
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		id, err := uuid.Parse(d.RackID)
		if err != nil {
			return err
		}
		// As applyRack: only a rack with a row is retired.
		l.retired[id] = l.retired[id] || l.racks[id]
		l.drop(id, func(*leaseRow) bool { return true })
		return nil
	}
	rack, changes, sweep, err := leaseChanges(s)
	if err != nil || rack == uuid.Nil {
		return err
	}
	rows := l.rack(rack)
	for _, c := range changes {
		k := leaseKey{rack, c.MAC, c.IP}
		r := rows[k]
		switch {
		case c.Action == events.DHCPAcked:
			if l.retired[rack] {
				continue
			}
			if r == nil {
				r = &leaseRow{}
				rows[k] = r
			}
			r.subnet, r.hostname, r.lastAction, r.expires, r.count, r.at = c.Subnet, c.Hostname, c.Action, c.Expires, r.count+c.Count, c.At
		case r != nil:
			r.lastAction, r.at = c.Action, c.At
			if r.expires == nil || c.At.Before(*r.expires) {
				at := c.At
				r.expires = &at
			}
		default:
			continue
		}
		l.dirty[k] = true
	}
	if sweep != nil {
		l.drop(rack, func(r *leaseRow) bool {
			end := r.at
			if r.expires != nil {
				end = *r.expires
			}
			return end.Before(*sweep)
		})
	}
	return nil
}

// rack returns the rows of one rack.
func (l *leasesRebuild) rack(id uuid.UUID) map[leaseKey]*leaseRow {
	rows := l.rows[id]
	if rows == nil {
		rows = map[leaseKey]*leaseRow{}
		l.rows[id] = rows
	}
	return rows
}

// drop removes the rows of rack that gone says go.
func (l *leasesRebuild) drop(rack uuid.UUID, gone func(*leaseRow) bool) {
	rows := l.rows[rack]
	for k, r := range rows {
		if gone(r) {
			delete(rows, k)
			l.dirty[k] = true
		}
	}
}

func (l *leasesRebuild) Flush(q *pgx.Batch) {
	if len(l.dirty) == 0 {
		return
	}
	var del, up struct {
		rack           []uuid.UUID
		mac, ip        []string
		subnet         []*string
		hostname, last []string
		expires        []*time.Time
		count          []int64
		at             []time.Time
	}
	for k := range l.dirty {
		r := l.rows[k.rack][k]
		if r == nil {
			del.rack, del.mac, del.ip = append(del.rack, k.rack), append(del.mac, k.mac), append(del.ip, k.ip)
			continue
		}
		up.rack, up.mac, up.ip = append(up.rack, k.rack), append(up.mac, k.mac), append(up.ip, k.ip)
		up.subnet, up.hostname, up.last = append(up.subnet, r.subnet), append(up.hostname, r.hostname), append(up.last, r.lastAction)
		up.expires, up.count, up.at = append(up.expires, r.expires), append(up.count, r.count), append(up.at, r.at)
	}
	if len(del.rack) > 0 {
		q.Queue(`DELETE FROM dhcp_leases d USING unnest($1::uuid[], $2::text[], $3::text[]) AS u(rack_id, mac, ip)
			WHERE d.rack_id = u.rack_id AND d.mac = u.mac AND d.ip = u.ip::inet`, del.rack, del.mac, del.ip)
	}
	if len(up.rack) > 0 {
		q.Queue(`INSERT INTO dhcp_leases (rack_id, mac, ip, subnet, hostname, last_action, expires, count, at)
			SELECT rack_id, mac, ip::inet, subnet::cidr, hostname, last_action, expires, count, at
			FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::bigint[], $9::timestamptz[])
				AS u(rack_id, mac, ip, subnet, hostname, last_action, expires, count, at)
			ON CONFLICT (rack_id, mac, ip) DO UPDATE SET subnet = excluded.subnet, hostname = excluded.hostname,
				last_action = excluded.last_action, expires = excluded.expires, count = excluded.count, at = excluded.at`,
			up.rack, up.mac, up.ip, up.subnet, up.hostname, up.last, up.expires, up.count, up.at)
	}
	clear(l.dirty)
}
