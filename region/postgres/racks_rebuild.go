package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
)

// rackRow is a racks row, named as the table names its columns.
type rackRow struct {
	ID                  uuid.UUID       `json:"id"`
	Name                string          `json:"name"`
	Version             string          `json:"version"`
	Hostname            string          `json:"hostname"`
	Addresses           []string        `json:"addresses"`
	TFTP                []string        `json:"tftp"`
	HTTP                []string        `json:"http"`
	HeartbeatIntervalMS int64           `json:"heartbeat_interval_ms"`
	StartedAt           time.Time       `json:"started_at"`
	FirstSeen           time.Time       `json:"first_seen"`
	LastSeen            time.Time       `json:"last_seen"`
	Online              bool            `json:"online"`
	StatusChangedAt     time.Time       `json:"status_changed_at"`
	LastHeartbeat       *time.Time      `json:"last_heartbeat"`
	DroppedEvents       int64           `json:"dropped_events"`
	BootURL             string          `json:"boot_url"`
	DHCP                json.RawMessage `json:"dhcp"`
	RetiredAt           *time.Time      `json:"retired_at"`
	RetiredBy           string          `json:"retired_by"`
}

var rackColumns = []string{"name", "version", "hostname", "addresses", "tftp", "http", "heartbeat_interval_ms",
	"started_at", "first_seen", "last_seen", "online", "status_changed_at", "last_heartbeat", "dropped_events",
	"boot_url", "dhcp", "retired_at", "retired_by"}

// racksRebuild stands in for applyRack in a rebuild. Every event of a
// rack moves its last_seen, and its heartbeats' liveness changes and
// re-registrations rewrite the same few rows: applied one by one, a log
// of a million rack events rewrites each row hundreds of thousands of
// times, each rewrite slower than the last within a transaction. It keeps
// the table in memory, as applyRack's statements would leave it, and
// writes the racks that changed at each Flush, and before an event whose
// projection asks the table whether a rack is retired (capabilities).
type racksRebuild struct {
	racks map[uuid.UUID]*rackRow
	dirty map[uuid.UUID]bool
}

func newRacksRebuild() RebuildApplier {
	return &racksRebuild{racks: map[uuid.UUID]*rackRow{}, dirty: map[uuid.UUID]bool{}}
}

func (r *racksRebuild) Load(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT row_to_json(r)::text FROM racks r`)
	if err != nil {
		return wrap("load racks", err)
	}
	for rows.Next() {
		var s string
		k := &rackRow{}
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return wrap("load racks", err)
		}
		if err := json.Unmarshal([]byte(s), k); err != nil {
			rows.Close()
			return fmt.Errorf("load racks: %w", err)
		}
		r.racks[k.ID] = k
	}
	return wrap("load racks", rows.Err())
}

// inService returns the row of a rack in service (not retired), nil for none.
func (r *racksRebuild) inService(id string) *rackRow {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil
	}
	if k := r.racks[u]; k != nil && k.RetiredAt == nil {
		return k
	}
	return nil
}

func (r *racksRebuild) Apply(q *pgx.Batch, s Stored) error {
	at := us(s.Time)
	switch s.Type {
	case events.TypeRackRegistered:
		var d events.RackRegistered
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		id, err := uuid.Parse(events.RackIDFromSource(s.Source))
		if err != nil {
			return nil // live, the append fails
		}
		var dhcp json.RawMessage
		if d.DHCP != nil {
			if dhcp, err = json.Marshal(d.DHCP); err != nil {
				return err
			}
		}
		k := r.racks[id]
		switch {
		case k == nil:
			k = &rackRow{ID: id, FirstSeen: at, LastSeen: at, Online: true, StatusChangedAt: at}
			r.racks[id] = k
		case k.RetiredAt != nil:
			return nil
		case at.After(k.LastSeen):
			k.LastSeen = at
		}
		k.Name, k.Version, k.Hostname, k.Addresses, k.TFTP, k.HTTP = d.Name, d.Version, d.Hostname, nz(d.Addresses), nz(d.TFTP), nz(d.HTTP)
		k.HeartbeatIntervalMS, k.StartedAt, k.BootURL, k.DHCP = d.HeartbeatIntervalMS, us(d.StartedAt), d.BootURL, dhcp
		r.dirty[id] = true
		return nil
	case events.TypeRackOffline, events.TypeRackOnline:
		var d events.RackLiveness
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if k := r.inService(d.RackID); k != nil {
			k.Online, k.StatusChangedAt = s.Type == events.TypeRackOnline, at
			if d.LastHeartbeat != nil {
				k.LastHeartbeat = usp(*d.LastHeartbeat)
			}
			r.dirty[k.ID] = true
		}
		return nil
	case events.TypeRackRetired:
		var d events.RackRetired
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if k := r.inService(d.RackID); k != nil {
			k.RetiredAt, k.RetiredBy, k.Online, k.StatusChangedAt = &at, s.Actor, false, at
			r.dirty[k.ID] = true
		}
		return nil
	case events.TypeCapabilitiesReported:
		// The OS registry's statements ask whether the rack is retired.
		r.Flush(q)
	}
	id, dropped, err := rackTouch(s)
	if err != nil || id == "" {
		return err
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return nil // live, the append fails
	}
	if k := r.racks[u]; k != nil {
		if at.After(k.LastSeen) {
			k.LastSeen = at
		}
		k.DroppedEvents += dropped
		r.dirty[u] = true
	}
	return nil
}

func (r *racksRebuild) Flush(q *pgx.Batch) {
	if len(r.dirty) == 0 {
		return
	}
	rows := make([]*rackRow, 0, len(r.dirty))
	for id := range r.dirty {
		rows = append(rows, r.racks[id])
	}
	doc, err := json.Marshal(rows)
	if err != nil {
		panic(err) // of strings, numbers, times and JSON only
	}
	set := make([]string, len(rackColumns))
	for i, c := range rackColumns {
		set[i] = c + " = excluded." + c
	}
	q.Queue(`INSERT INTO racks SELECT * FROM jsonb_populate_recordset(NULL::racks, $1::jsonb)
		ON CONFLICT (id) DO UPDATE SET `+strings.Join(set, ", "), string(doc))
	clear(r.dirty)
}
