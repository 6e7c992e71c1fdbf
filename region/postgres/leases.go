package postgres

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// leasesProjection keeps the leases racks' managed DHCP servers gave, from
// their dhcp_leases_changed events. Unlike the rest of the boot
// telemetry, these events now feed a projection: pruning them (-telemetry-*)
// keeps the table as it is, but a rebuild after a prune has only the
// leases of the events left, which are the recent ones.
var leasesProjection = Projection{
	Name:   "dhcp_leases",
	Tables: []string{"dhcp_leases"},
	Apply:  applyLeases,
	// A rack's leases change with nearly every report it makes.
	Rebuild: newLeasesRebuild,
}

// LeaseKeep is how long a lease stays in the table after it ended (its
// expiry, or its release): each report of a rack drops its leases that
// ended that long before the report's end, so the table stays the size
// of the racks' current leases.
const LeaseKeep = 24 * time.Hour

func applyLeases(q *pgx.Batch, s Stored) error {
	if s.Type == events.TypeRackRetired {
		// A retired rack reports no more, so nothing would ever drop its
		// leases: they go with it.
		var d events.RackRetired
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`DELETE FROM dhcp_leases WHERE rack_id = $1`, d.RackID)
		return nil
	}
	rackID, changes, sweep, err := leaseChanges(s)
	if err != nil || rackID == uuid.Nil {
		return err
	}
	for _, c := range changes {
		switch c.Action {
		case events.DHCPAcked:
			// A retired rack's report (on an open NATS server nothing
			// keeps it off) is not taken, as its capabilities are not.
			q.Queue(`INSERT INTO dhcp_leases (rack_id, mac, ip, subnet, hostname, last_action, expires, count, at)
				SELECT $1::uuid, $2::text, $3::inet, $4::cidr, $5::text, $6::text, $7::timestamptz, $8::bigint, $9::timestamptz
				WHERE NOT EXISTS (SELECT 1 FROM racks WHERE id = $1 AND retired_at IS NOT NULL)
				ON CONFLICT (rack_id, mac, ip) DO UPDATE SET subnet = excluded.subnet, hostname = excluded.hostname,
					last_action = excluded.last_action, expires = excluded.expires,
					count = dhcp_leases.count + excluded.count, at = excluded.at`,
				rackID, c.MAC, c.IP, c.Subnet, c.Hostname, c.Action, c.Expires, c.Count, c.At)
		default:
			// The lease ends: it stays, marked, until LeaseKeep has
			// passed, so that the last thing that happened to an address
			// can be told. A refusal of an address never leased here
			// adds nothing.
			q.Queue(`UPDATE dhcp_leases SET last_action = $4, expires = least(coalesce(expires, $5), $5), at = $5
				WHERE rack_id = $1 AND mac = $2 AND ip = $3`, rackID, c.MAC, c.IP, c.Action, c.At)
		}
	}
	if sweep != nil {
		q.Queue(`DELETE FROM dhcp_leases WHERE rack_id = $1 AND coalesce(expires, at) < $2`, rackID, *sweep)
	}
	return nil
}

// leaseChange is one change of a dhcp_leases_changed that the projection
// takes, with its values as the table keeps them.
type leaseChange struct {
	Action, MAC, IP, Hostname string
	Subnet                    *string
	Expires                   *time.Time
	Count                     int64
	At                        time.Time
}

// leaseChanges returns what a dhcp_leases_changed does to the leases of
// rack (uuid.Nil for another event, or one not of a rack): its changes in
// the order they apply, and, when it says until when it is complete, the
// time before which ended leases go.
func leaseChanges(s Stored) (rack uuid.UUID, changes []leaseChange, sweep *time.Time, err error) {
	if s.Type != events.TypeDHCPLeasesChanged {
		return uuid.Nil, nil, nil, nil
	}
	// The rack is the event's source, which the ingester has checked
	// against the subject the rack could publish on: a rack reports,
	// and changes, only leases of its own.
	rack, err = uuid.Parse(events.RackIDFromSource(s.Source))
	if err != nil {
		return uuid.Nil, nil, nil, nil
	}
	var d events.DHCPLeasesChanged
	if err := s.DecodeData(&d); err != nil {
		return uuid.Nil, nil, nil, err
	}
	// The rack coalesces changes by action and client: the same client
	// may be acked then released within one event, so they apply in the
	// order they last happened.
	all := slices.Clone(d.Changes)
	slices.SortStableFunc(all, func(a, b events.DHCPLeaseChange) int { return a.At.Compare(b.At) })
	for _, c := range all {
		ip, err := netip.ParseAddr(c.IP)
		if err != nil || c.MAC == "" {
			continue // proxy mode's boot offers have no address
		}
		lc := leaseChange{Action: c.Action, MAC: c.MAC, IP: ip.String(), Hostname: c.Hostname, Count: max(c.Count, 1),
			At: c.At.Truncate(time.Microsecond)}
		if p, err := netip.ParsePrefix(c.Subnet); err == nil {
			v := p.Masked().String()
			lc.Subnet = &v
		}
		if c.Expires != nil {
			e := c.Expires.Truncate(time.Microsecond)
			lc.Expires = &e
		}
		switch c.Action {
		case events.DHCPAcked, events.DHCPReleased, events.DHCPRefused, events.DHCPDeclined:
			changes = append(changes, lc)
		}
	}
	if !d.Until.IsZero() {
		t := d.Until.Add(-LeaseKeep).Truncate(time.Microsecond)
		sweep = &t
	}
	return rack, changes, sweep, nil
}

// Lease is a lease a rack's DHCP server gave.
type Lease struct {
	RackID     string     `json:"rack_id"`
	MAC        string     `json:"mac"`
	IP         string     `json:"ip"`
	Subnet     string     `json:"subnet,omitempty"`
	Hostname   string     `json:"hostname,omitempty"`
	LastAction string     `json:"last_action"`
	Expires    *time.Time `json:"expires,omitempty"`
	// Count is how often the lease was given or renewed; At is the last.
	Count int64     `json:"count"`
	At    time.Time `json:"at"`
	// MachineID and MachineHostname name the machine with the MAC.
	MachineID       string `json:"machine_id,omitempty"`
	MachineHostname string `json:"machine_hostname,omitempty"`
}

// LeaseFilter selects current leases: acked and not expired at Now.
type LeaseFilter struct {
	RackID string
	// Subnet narrows to addresses in it (with RackID: a subnet's leases).
	Subnet *netip.Prefix
	MAC    string
	// After is the cursor of the page before (LeaseCursor of its last).
	After string
	Limit int
	Now   time.Time
}

// Lease list bounds.
const (
	DefaultLeaseLimit = 100
	MaxLeaseLimit     = 1000
)

// LeaseCursor is where a list of leases continues after l: leases are
// ordered by address, MAC and rack.
func LeaseCursor(l Lease) string { return l.IP + "|" + l.MAC + "|" + l.RackID }

// ListLeases returns the current leases f selects, by address, MAC and
// rack.
func (db *DB) ListLeases(ctx context.Context, f LeaseFilter) ([]Lease, error) {
	if f.Limit <= 0 || f.Limit > MaxLeaseLimit {
		f.Limit = DefaultLeaseLimit
	}
	args := []any{f.Now}
	where := []string{`l.last_action = 'acked'`, `l.expires > $1`}
	cond := func(sql string, v ...any) {
		for _, x := range v {
			args = append(args, x)
			sql = strings.Replace(sql, "$?", fmt.Sprintf("$%d", len(args)), 1)
		}
		where = append(where, sql)
	}
	if f.RackID != "" {
		// The column itself, not a cast of it: a rack's (and a subnet's)
		// leases are then read by the index, not by a scan of every rack's.
		rackID, err := uuid.Parse(f.RackID)
		if err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "rack_id %.80q is not a UUID", f.RackID)
		}
		cond(`l.rack_id = $?::uuid`, rackID.String())
	}
	if f.Subnet != nil {
		cond(`l.ip <<= $?::cidr`, f.Subnet.Masked().String())
	}
	if f.MAC != "" {
		cond(`l.mac = $?`, f.MAC)
	}
	if f.After != "" {
		parts := strings.Split(f.After, "|")
		ip, err := netip.ParseAddr(parts[0])
		if len(parts) != 3 || err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "after %.80q: want the next of the page before", f.After)
		}
		if _, err := uuid.Parse(parts[2]); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "after %.80q: want the next of the page before", f.After)
		}
		cond(`(l.ip, l.mac, l.rack_id) > ($?::inet, $?, $?::uuid)`, ip.String(), parts[1], parts[2])
	}
	args = append(args, f.Limit)
	rows, err := db.pool.Query(ctx, `SELECT l.rack_id::text, l.mac, host(l.ip), coalesce(l.subnet::text, ''), l.hostname, l.last_action,
			l.expires, l.count, l.at, coalesce(m.id::text, ''), coalesce(m.hostname, '')
		FROM dhcp_leases l LEFT JOIN machine_macs mm ON mm.mac = l.mac LEFT JOIN machines m ON m.id = mm.machine_id
		WHERE `+strings.Join(where, " AND ")+fmt.Sprintf(` ORDER BY l.ip, l.mac, l.rack_id LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, wrap("list leases", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Lease, error) {
		var l Lease
		err := row.Scan(&l.RackID, &l.MAC, &l.IP, &l.Subnet, &l.Hostname, &l.LastAction, &l.Expires, &l.Count, &l.At,
			&l.MachineID, &l.MachineHostname)
		return l, err
	})
	return out, wrap("list leases", err)
}
