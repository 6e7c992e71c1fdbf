package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

// machineRow is a machines row, every column the projections write, named
// as the table names them.
type machineRow struct {
	ID              string     `json:"id"`
	Hostname        string     `json:"hostname"`
	MACs            []string   `json:"macs"`
	Arch            string     `json:"arch"`
	BootRackID      *string    `json:"boot_rack_id"`
	Status          string     `json:"status"`
	Origin          string     `json:"origin"`
	OS              string     `json:"os"`
	Release         string     `json:"release"`
	Subarch         string     `json:"subarch"`
	ImageVersionID  string     `json:"image_version_id"`
	DeployRackID    *string    `json:"deploy_rack_id"`
	PreseedName     string     `json:"preseed_name"`
	PreseedVersion  int64      `json:"preseed_version"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
	Version         int64      `json:"version"`
	DeploymentID    *string    `json:"deployment_id"`
	DeployStartedAt *time.Time `json:"deploy_started_at"`
	StatusReason    string     `json:"status_reason"`
	DeployedAt      *time.Time `json:"deployed_at"`
	BootFile        string     `json:"boot_file"`
	PowerState      string     `json:"power_state"`
	PowerCheckedAt  *time.Time `json:"power_checked_at"`
	PowerOutcome    string     `json:"power_outcome"`
	PowerError      string     `json:"power_error"`
	Tags            []string   `json:"tags"`
}

// machineColumns are machineRow's columns, for the statement that writes
// rows back.
var machineColumns = []string{"hostname", "macs", "arch", "boot_rack_id", "status", "origin", "os", "release", "subarch",
	"image_version_id", "deploy_rack_id", "preseed_name", "preseed_version", "created_at", "updated_at", "version",
	"deployment_id", "deploy_started_at", "status_reason", "deployed_at", "boot_file", "power_state", "power_checked_at",
	"power_outcome", "power_error", "tags"}

type bootDecisionRow struct {
	MAC       string          `json:"mac"`
	MachineID *string         `json:"machine_id"`
	Decision  json.RawMessage `json:"decision"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// powerTarget is what decides which rack drives a machine's power: its
// machine_power row's rack and address (power_driving_rack).
type powerTarget struct {
	rack *string
	addr *netip.Addr
}

type subnetRow struct {
	rack   string
	prefix netip.Prefix
}

// machinesRebuild stands in for applyMachine, and for applyPower's
// updates of machines, in a rebuild. A machine changes with every step of
// its lifecycle and every power reading, each a rewrite of a wide row with
// many indexes: it keeps the table in memory, as those statements would
// leave it, and writes the machines that changed at each Flush, and before
// an event another projection applies by reading machines (an inventory,
// a commissioning script's result).
//
// To tell which rack drives a machine's power, it follows the power
// parameters and the subnets as their projections do.
type machinesRebuild struct {
	machines  map[string]*machineRow
	dirty     map[string]bool // machines to write, or delete when not in machines
	macsDirty map[string]bool // machines whose machine_macs rows to write again
	decisions map[string]*bootDecisionRow
	decDirty  map[string]bool
	renamed   map[string]bool // hostnames given up since the last Flush
	power     map[string]powerTarget
	subnets   map[string]subnetRow
}

func newMachinesRebuild() RebuildApplier {
	return &machinesRebuild{machines: map[string]*machineRow{}, dirty: map[string]bool{}, macsDirty: map[string]bool{},
		decisions: map[string]*bootDecisionRow{}, decDirty: map[string]bool{}, renamed: map[string]bool{},
		power: map[string]powerTarget{}, subnets: map[string]subnetRow{}}
}

func (r *machinesRebuild) Load(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT row_to_json(m)::text FROM machines m`)
	if err != nil {
		return wrap("load machines", err)
	}
	for rows.Next() {
		var s string
		m := &machineRow{}
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return wrap("load machines", err)
		}
		if err := json.Unmarshal([]byte(s), m); err != nil {
			rows.Close()
			return fmt.Errorf("load machines: %w", err)
		}
		r.machines[m.ID] = m
	}
	if err := rows.Err(); err != nil {
		return wrap("load machines", err)
	}
	rows, err = tx.Query(ctx, `SELECT machine_id::text, rack_id::text, host(address_inet) FROM machine_power`)
	if err != nil {
		return wrap("load power parameters", err)
	}
	for rows.Next() {
		var id string
		var rack, addr *string
		if err := rows.Scan(&id, &rack, &addr); err != nil {
			rows.Close()
			return wrap("load power parameters", err)
		}
		t := powerTarget{rack: rack}
		if addr != nil {
			if a, err := netip.ParseAddr(*addr); err == nil {
				t.addr = &a
			}
		}
		r.power[id] = t
	}
	if err := rows.Err(); err != nil {
		return wrap("load power parameters", err)
	}
	rows, err = tx.Query(ctx, `SELECT id::text, rack_id::text, cidr::text FROM subnets`)
	if err != nil {
		return wrap("load subnets", err)
	}
	for rows.Next() {
		var id, rack, cidr string
		if err := rows.Scan(&id, &rack, &cidr); err != nil {
			rows.Close()
			return wrap("load subnets", err)
		}
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			rows.Close()
			return fmt.Errorf("load subnets: %w", err)
		}
		r.subnets[id] = subnetRow{rack, p}
	}
	return wrap("load subnets", rows.Err())
}

// us is t as Postgres keeps it.
func us(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

func usp(t time.Time) *time.Time {
	t = us(t)
	return &t
}

func (r *machinesRebuild) Apply(q *pgx.Batch, s Stored) error {
	at := us(s.Time)
	switch s.Type {
	case events.TypeInventoryReported, events.TypeAgentScriptReported:
		// The hardware and scripts projections read machines.
		r.Flush(q)
		return nil
	case events.TypeMachineCreated, events.TypeMachineUpdated:
		var d events.MachineState
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		// A hostname is one machine's. The rows are written in one
		// statement, which must not give one a hostname another still
		// has in the table: when this one takes a hostname another gave
		// up since the last Flush, that one's change is written first,
		// as it was made live. (A MAC cannot clash: a machine's rows in
		// machine_macs go before any are written.)
		if r.renamed[d.Hostname] {
			r.Flush(q)
		}
		var rack *string
		if d.BootRackID != "" {
			rack = &d.BootRackID
		}
		m := r.machines[d.MachineID]
		if s.Type == events.TypeMachineCreated {
			m = &machineRow{ID: d.MachineID, Status: d.Status, Origin: d.Origin, CreatedAt: at, PowerState: "unknown", Tags: []string{}}
			r.machines[d.MachineID] = m
		}
		if m != nil {
			if m.Hostname != d.Hostname {
				r.renamed[m.Hostname] = true
			}
			m.Hostname, m.MACs, m.Arch, m.BootRackID, m.UpdatedAt, m.Version, m.BootFile = d.Hostname, d.MACs, d.Arch, rack, at, s.Version, d.BootFile
			r.touch(d.MachineID)
			r.macsDirty[d.MachineID] = true
		}
	case events.TypeMachineDeleted:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		delete(r.machines, d.MachineID)
		r.touch(d.MachineID)
		delete(r.power, d.MachineID) // as applyPower
	case events.TypeMachineDeploying:
		var d events.Deployment
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if m := r.machines[d.MachineID]; m != nil {
			rack, id := d.RackID, s.ID
			m.Status, m.StatusReason, m.OS, m.Release, m.Arch, m.Subarch = "deploying", "", d.OS, d.Release, d.Arch, d.Subarch
			m.ImageVersionID, m.DeployRackID, m.PreseedName, m.PreseedVersion = d.ImageVersionID, &rack, d.PreseedName, d.PreseedVersion
			m.UpdatedAt, m.Version, m.DeploymentID, m.DeployStartedAt, m.DeployedAt = at, s.Version, &id, &at, nil
			r.touch(d.MachineID)
		}
	case events.TypeMachineCommissioning, events.TypeMachineErasing, events.TypeMachineReleased:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if m := r.machines[d.MachineID]; m != nil {
			m.Status, m.StatusReason, m.OS, m.Release, m.Subarch, m.ImageVersionID = statusAfter(s.Type), "", "", "", "", ""
			m.DeployRackID, m.PreseedName, m.PreseedVersion, m.UpdatedAt, m.Version = nil, "", 0, at, s.Version
			m.DeploymentID, m.DeployStartedAt, m.DeployedAt = nil, nil, nil
			if s.Type != events.TypeMachineReleased {
				id := s.ID
				m.DeploymentID = &id
			}
			r.touch(d.MachineID)
		}
	case events.TypeMachineDeployed, events.TypeMachineFailed, events.TypeMachineBroken, events.TypeMachineFixed,
		events.TypeMachineCommissioned, events.TypeMachineReleasing,
		events.TypeMachineRescueEntered, events.TypeMachineRescueExited:
		var d events.MachineRef
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if m := r.machines[d.MachineID]; m != nil {
			if m.DeployedAt == nil {
				m.Status = statusAfter(s.Type)
			} else {
				m.Status = statusAfterDeployed(s.Type)
			}
			m.StatusReason = ""
			if s.Type == events.TypeMachineFailed || s.Type == events.TypeMachineBroken {
				m.StatusReason = d.Reason
			}
			switch s.Type {
			case events.TypeMachineDeployed:
				m.DeployedAt = &at
			case events.TypeMachineReleasing:
				m.DeployedAt = nil
			}
			m.UpdatedAt, m.Version = at, s.Version
			r.touch(d.MachineID)
		}
	case events.TypeMachineTagsSet:
		var d events.MachineTags
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if m := r.machines[d.MachineID]; m != nil {
			m.Tags, m.UpdatedAt, m.Version = d.Tags, at, s.Version
			r.touch(d.MachineID)
		}
	case events.TypeBootDecisionSet:
		var d events.BootDecision
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		var mid *string
		if d.MachineID != "" {
			mid = &d.MachineID
		}
		r.decisions[d.MAC] = &bootDecisionRow{MAC: d.MAC, MachineID: mid, Decision: s.Data, UpdatedAt: at}
		r.decDirty[d.MAC] = true
	case events.TypeBootDecisionCleared:
		var d events.BootDecisionCleared
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		delete(r.decisions, d.MAC)
		r.decDirty[d.MAC] = true
	case events.TypePowerParametersSet:
		var d events.PowerParametersSet
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		t := powerTarget{}
		if d.RackID != "" {
			rack := d.RackID
			t.rack = &rack
		}
		if a, err := netip.ParseAddr(d.Address); err == nil {
			a = a.WithZone("")
			t.addr = &a
		}
		r.power[d.MachineID] = t
	case events.TypePowerParametersCleared:
		var d events.PowerParametersCleared
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		delete(r.power, d.MachineID)
	case events.TypeSubnetSet:
		var d events.SubnetSet
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		r.subnets[d.SubnetID] = subnetRow{d.RackID, d.CIDR.Masked()}
	case events.TypeSubnetDeleted:
		var d events.SubnetDeleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if d.MovedToRackID == "" {
			delete(r.subnets, d.SubnetID)
		}
	case events.TypePowerActionCompleted:
		var d events.PowerActionCompleted
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if _, err := uuid.Parse(d.MachineID); err != nil {
			return nil
		}
		rack, err := uuid.Parse(events.RackIDFromSource(s.Source))
		if err != nil {
			return nil
		}
		m := r.machines[d.MachineID]
		p, ok := r.power[d.MachineID]
		if m == nil || !ok || r.drivingRack(p, m.BootRackID) != rack.String() {
			return nil
		}
		r.powerState(d.MachineID, m, d.State, us(d.StartedAt.Add(time.Duration(d.DurationMS)*time.Millisecond)), d.Outcome, d.Error)
	case events.TypePowerStateChanged:
		var d events.PowerStateChanged
		if err := s.DecodeData(&d); err != nil {
			return err
		}
		if m := r.machines[d.MachineID]; m != nil {
			r.powerState(d.MachineID, m, d.State, us(d.CheckedAt), d.Outcome, d.Error)
		}
	}
	if id, ok := strings.CutPrefix(s.Subject, events.MachineStreamPrefix); ok && machine.IsChange(s.Type) && s.Source == events.RegionSource {
		if m := r.machines[id]; m != nil && s.Version > m.Version {
			m.Version = s.Version
			r.touch(id)
		}
	}
	return nil
}

// powerState is applyPower's update of a machine's power: an older
// reading does not overwrite a newer one.
func (r *machinesRebuild) powerState(id string, m *machineRow, state string, at time.Time, outcome, msg string) {
	if m.PowerCheckedAt != nil && m.PowerCheckedAt.After(at) {
		return
	}
	m.PowerState, m.PowerCheckedAt, m.PowerOutcome, m.PowerError = state, &at, outcome, msg
	r.touch(id)
}

// drivingRack is power_driving_rack: the rack of the power parameters,
// else that of the narrowest subnet holding their address (the least rack
// id of equal ones), else the machine's boot rack; "" for none.
func (r *machinesRebuild) drivingRack(p powerTarget, bootRack *string) string {
	if p.rack != nil {
		return strings.ToLower(*p.rack)
	}
	if p.addr != nil {
		best, bits := "", -1
		for _, s := range r.subnets {
			if !s.prefix.Contains(*p.addr) {
				continue
			}
			rack := strings.ToLower(s.rack)
			if b := s.prefix.Bits(); b > bits || b == bits && rack < best {
				best, bits = rack, b
			}
		}
		if bits >= 0 {
			return best
		}
	}
	if bootRack != nil {
		return strings.ToLower(*bootRack)
	}
	return ""
}

func (r *machinesRebuild) touch(id string) { r.dirty[id] = true }

func (r *machinesRebuild) Flush(q *pgx.Batch) {
	if len(r.dirty) > 0 {
		var gone []string
		var rows []*machineRow
		var macs, macOwners []string
		var macsOf []string
		for id := range r.dirty {
			m := r.machines[id]
			if m == nil {
				gone = append(gone, id)
				continue
			}
			rows = append(rows, m)
			if r.macsDirty[id] {
				macsOf = append(macsOf, id)
				for _, mac := range m.MACs {
					macs, macOwners = append(macs, mac), append(macOwners, id)
				}
			}
		}
		if len(gone) > 0 {
			q.Queue(`DELETE FROM machines WHERE id = ANY($1::uuid[])`, gone)
		}
		if len(macsOf) > 0 {
			q.Queue(`DELETE FROM machine_macs WHERE machine_id = ANY($1::uuid[])`, macsOf)
		}
		if len(rows) > 0 {
			doc, err := json.Marshal(rows)
			if err != nil {
				panic(err) // of strings, numbers and times only
			}
			set := make([]string, len(machineColumns))
			for i, c := range machineColumns {
				set[i] = c + " = excluded." + c
			}
			q.Queue(`INSERT INTO machines SELECT * FROM jsonb_populate_recordset(NULL::machines, $1::jsonb)
				ON CONFLICT (id) DO UPDATE SET `+strings.Join(set, ", "), string(doc))
		}
		if len(macs) > 0 {
			q.Queue(`INSERT INTO machine_macs (mac, machine_id) SELECT * FROM unnest($1::text[], $2::uuid[])`, macs, macOwners)
		}
		clear(r.dirty)
		clear(r.macsDirty)
		clear(r.renamed)
	}
	if len(r.decDirty) > 0 {
		var gone []string
		var rows []*bootDecisionRow
		for mac := range r.decDirty {
			if d := r.decisions[mac]; d != nil {
				rows = append(rows, d)
			} else {
				gone = append(gone, mac)
			}
		}
		if len(gone) > 0 {
			q.Queue(`DELETE FROM boot_decisions WHERE mac = ANY($1::text[])`, gone)
		}
		if len(rows) > 0 {
			doc, err := json.Marshal(rows)
			if err != nil {
				panic(err)
			}
			q.Queue(`INSERT INTO boot_decisions (mac, machine_id, decision, updated_at)
				SELECT mac, machine_id, decision, updated_at FROM jsonb_to_recordset($1::jsonb)
					AS x(mac text, machine_id uuid, decision jsonb, updated_at timestamptz)
				ON CONFLICT (mac) DO UPDATE SET machine_id = excluded.machine_id, decision = excluded.decision,
					updated_at = excluded.updated_at`, string(doc))
		}
		clear(r.decDirty)
	}
}
