package postgres

import (
	"context"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

var racksProjection = Projection{
	Name:     "racks",
	Tables:   []string{"racks"},
	Apply:    applyRack,
	Rebuild:  newRacksRebuild,
	Coalesce: func() RebuildApplier { return &rackTouches{} },
}

// applyRack projects racks. A new rack is online from its first
// registration; after that only the region's liveness events change its
// status, so that every offline→online transition is an event of its own.
// A retired rack stays retired: what it says later (a rack of an open
// NATS server, which no credential keeps off) changes nothing but when it
// was last seen.
func applyRack(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeRackRegistered:
		var d events.RackRegistered
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		rackID := events.RackIDFromSource(s.Source)
		q.Queue(`INSERT INTO racks (id, name, version, hostname, addresses, tftp, http,
				heartbeat_interval_ms, started_at, first_seen, last_seen, online, status_changed_at, boot_url, dhcp)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, true, $10, $11, $12)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = excluded.version,
				hostname = excluded.hostname, addresses = excluded.addresses, tftp = excluded.tftp,
				http = excluded.http, heartbeat_interval_ms = excluded.heartbeat_interval_ms,
				started_at = excluded.started_at, last_seen = greatest(racks.last_seen, excluded.last_seen),
				boot_url = excluded.boot_url, dhcp = excluded.dhcp
			WHERE racks.retired_at IS NULL`,
			rackID, d.Name, d.Version, d.Hostname, nz(d.Addresses), nz(d.TFTP), nz(d.HTTP),
			d.HeartbeatIntervalMS, d.StartedAt, s.Time, d.BootURL, d.DHCP)
		return nil
	case events.TypeRackOffline, events.TypeRackOnline:
		var d events.RackLiveness
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`UPDATE racks SET online = $2, status_changed_at = $3,
				last_heartbeat = coalesce($4, last_heartbeat)
			WHERE id = $1 AND retired_at IS NULL`, d.RackID, s.Type == events.TypeRackOnline, s.Time, d.LastHeartbeat)
		return nil
	case events.TypeRackRetired:
		var d events.RackRetired
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		q.Queue(`UPDATE racks SET retired_at = $2, retired_by = $3, online = false, status_changed_at = $2
			WHERE id = $1 AND retired_at IS NULL`, d.RackID, s.Time, s.Actor)
		return nil
	}
	id, dropped, err := rackTouch(s)
	switch {
	case err != nil || id == "":
		return err
	case s.Type == events.TypeEventsDropped:
		q.Queue(`UPDATE racks SET dropped_events = dropped_events + $2,
			last_seen = greatest(last_seen, $3) WHERE id = $1`, id, dropped, s.Time)
	default:
		q.Queue(`UPDATE racks SET last_seen = greatest(last_seen, $2) WHERE id = $1`, id, s.Time)
	}
	return nil
}

// rackTouches is applyRack over one append's events, holding back what
// every other event of a rack does to its row (last_seen, a maximum, and
// dropped_events, a sum: neither depends on order) until Flush, which
// writes each rack touched once. What does depend on order, a rack's
// registration (which makes the row a touch before it finds missing),
// liveness or retirement, is applied in its place, after the touches
// held so far.
type rackTouches struct {
	ids  []string
	seen map[string]*rackTouched
}

type rackTouched struct {
	last    time.Time
	dropped int64
}

func (r *rackTouches) Apply(q *pgx.Batch, s Stored) error {
	switch s.Type {
	case events.TypeRackRegistered, events.TypeRackOffline, events.TypeRackOnline, events.TypeRackRetired:
		r.Flush(q)
		return applyRack(q, s)
	}
	id, dropped, err := rackTouch(s)
	if err != nil || id == "" {
		return err
	}
	t := r.seen[id]
	if t == nil {
		if r.seen == nil {
			r.seen = map[string]*rackTouched{}
		}
		t = &rackTouched{last: s.Time}
		r.seen[id] = t
		r.ids = append(r.ids, id)
	}
	if s.Time.After(t.last) {
		t.last = s.Time
	}
	t.dropped += dropped
	return nil
}

func (r *rackTouches) Flush(q *pgx.Batch) {
	if len(r.ids) == 0 {
		return
	}
	// In id order, so that the statement is the same whatever order the
	// racks came in. Ingest's appends of different racks' events touch
	// different rows (each rack's events are in one partition); a cycle
	// with another append is a deadlock Postgres breaks and InTx retries.
	sort.Strings(r.ids)
	last, dropped := make([]time.Time, len(r.ids)), make([]int64, len(r.ids))
	for i, id := range r.ids {
		last[i], dropped[i] = r.seen[id].last, r.seen[id].dropped
	}
	q.Queue(`UPDATE racks r SET dropped_events = r.dropped_events + t.dropped,
			last_seen = greatest(r.last_seen, t.last)
		FROM unnest($1::uuid[], $2::timestamptz[], $3::bigint[]) AS t(id, last, dropped)
		WHERE r.id = t.id`, r.ids, last, dropped)
	r.ids = nil
	clear(r.seen)
}

// rackTouch says what an event other than a rack's registration,
// liveness or retirement does to its rack's row: it was seen at the
// event's time, and it dropped as many events as an events_dropped
// says. id is "" when the event is not a rack's.
func rackTouch(s Stored) (id string, dropped int64, err error) {
	id = events.RackIDFromSource(s.Source)
	if s.Type == events.TypeEventsDropped {
		var d events.EventsDropped
		if err := s.DecodeData(&d); err != nil {
			return "", 0, err
		}
		dropped = d.Count
	}
	return id, dropped, nil
}

func nz(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const selectRack = `SELECT id::text, name, version, hostname, addresses, tftp, http, heartbeat_interval_ms,
	started_at, first_seen, last_seen, online, status_changed_at, last_heartbeat, dropped_events, boot_url, dhcp,
	retired_at, retired_by FROM racks`

func scanRack(row pgx.CollectableRow) (rackplane.Rack, error) {
	var r rackplane.Rack
	err := row.Scan(&r.ID, &r.Name, &r.Version, &r.Hostname, &r.Addresses, &r.TFTP, &r.HTTP,
		&r.HeartbeatIntervalMS, &r.StartedAt, &r.FirstSeen, &r.LastSeen, &r.Online,
		&r.StatusChangedAt, &r.LastHeartbeat, &r.DroppedEvents, &r.BootURL, &r.DHCP,
		&r.RetiredAt, &r.RetiredBy)
	return r, err
}

// ListRacks returns the racks in service: online ones first, then by
// name, and of one name the latest started first. A client that takes
// the first rack (or the first of a name) gets one that answers, not an
// earlier incarnation that went away.
func (db *DB) ListRacks(ctx context.Context) ([]rackplane.Rack, error) {
	rows, err := db.pool.Query(ctx, selectRack+` WHERE retired_at IS NULL ORDER BY online DESC, name, started_at DESC, id`)
	if err != nil {
		return nil, wrap("list racks", err)
	}
	racks, err := pgx.CollectRows(rows, scanRack)
	return racks, wrap("list racks", err)
}

// ListRetiredRacks returns the retired racks, the latest retired first.
func (db *DB) ListRetiredRacks(ctx context.Context) ([]rackplane.Rack, error) {
	rows, err := db.pool.Query(ctx, selectRack+` WHERE retired_at IS NOT NULL ORDER BY retired_at DESC, id`)
	if err != nil {
		return nil, wrap("list retired racks", err)
	}
	racks, err := pgx.CollectRows(rows, scanRack)
	return racks, wrap("list retired racks", err)
}

// GetRack returns one rack; ENOTFOUND when there is none with that id.
func (db *DB) GetRack(ctx context.Context, id string) (rackplane.Rack, error) {
	k := key(id)
	if !k.Valid {
		return rackplane.Rack{}, rackplane.Errorf(rackplane.ENOTFOUND, "no rack %s", id)
	}
	rows, err := db.pool.Query(ctx, selectRack+` WHERE id = $1`, k)
	if err != nil {
		return rackplane.Rack{}, wrap("get rack", err)
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRack)
	if err == pgx.ErrNoRows {
		return r, rackplane.Errorf(rackplane.ENOTFOUND, "no rack %s", id)
	}
	return r, wrap("get rack", err)
}

// RackStatus is what the liveness monitor needs of a rack.
type RackStatus struct {
	ID            string
	Online        bool
	Version       int64 // of the rack's stream, for an expected-version append
	LastHeartbeat *time.Time
	Interval      time.Duration
}

// RackStatuses returns the liveness state of every rack in service (a
// retired rack is not watched: it goes neither offline nor online again).
func (db *DB) RackStatuses(ctx context.Context) ([]RackStatus, error) {
	rows, err := db.pool.Query(ctx, `SELECT r.id::text, r.online, coalesce(s.version, 0), r.last_heartbeat, r.heartbeat_interval_ms
		FROM racks r LEFT JOIN streams s ON s.name = $1 || r.id::text WHERE r.retired_at IS NULL`, events.RackStreamPrefix)
	if err != nil {
		return nil, wrap("rack statuses", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (RackStatus, error) {
		var s RackStatus
		var ms int64
		err := row.Scan(&s.ID, &s.Online, &s.Version, &s.LastHeartbeat, &ms)
		s.Interval = time.Duration(ms) * time.Millisecond
		return s, err
	})
	return out, wrap("rack statuses", err)
}
