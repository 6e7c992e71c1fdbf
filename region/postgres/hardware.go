package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// hardwareProjection keeps machines' hardware (machine_hardware) and
// every report of it (machine_hardware_history) from racks'
// inventory_reported events. It runs after the machines projection, so a
// report is applied to a machine that exists at that point of the log;
// one for a machine the region does not have (never made, or deleted)
// stays in the log and changes nothing, in a rebuild as on the day. A
// machine's deletion takes its rows with it (the foreign keys cascade).
var hardwareProjection = Projection{
	Name:   "hardware",
	Tables: []string{"machine_hardware_history", "machine_hardware"},
	Apply:  applyHardware,
}

// HardwareFigures are the figures of an inventory worth filtering
// machines on, as machine_hardware keeps them beside the inventory.
type HardwareFigures struct {
	Arch             string `json:"arch"`
	CPUModel         string `json:"cpu_model"`
	Sockets          int    `json:"sockets"`
	Cores            int    `json:"cores"`
	Threads          int    `json:"threads"`
	MemoryBytes      int64  `json:"memory_bytes"`
	MemoryTotalBytes int64  `json:"memory_total_bytes"`
	Disks            int    `json:"disks"`
	DiskBytes        int64  `json:"disk_bytes"`
	LargestDiskBytes int64  `json:"largest_disk_bytes"`
	NICs             int    `json:"nics"`
	Firmware         string `json:"firmware"`
	SecureBoot       *bool  `json:"secure_boot,omitempty"`
}

// Figures returns inv's figures. MemoryBytes is the installed memory
// when the agent knew it, else the kernel's total: an operator asking for
// 8 GiB means the DIMMs, which MemTotal never reaches.
func Figures(inv events.Inventory) HardwareFigures {
	f := HardwareFigures{Arch: inv.Architecture, CPUModel: inv.CPU.Model, Sockets: inv.CPU.Sockets, Cores: inv.CPU.Cores,
		Threads: inv.CPU.Threads, MemoryBytes: inv.Memory.TotalBytes, MemoryTotalBytes: inv.Memory.TotalBytes,
		Disks: len(inv.Disks), NICs: len(inv.NICs), Firmware: inv.Firmware.Type, SecureBoot: inv.Firmware.SecureBoot}
	if inv.Memory.InstalledBytes > 0 {
		f.MemoryBytes = inv.Memory.InstalledBytes
	}
	for _, d := range inv.Disks {
		f.DiskBytes += d.SizeBytes
		f.LargestDiskBytes = max(f.LargestDiskBytes, d.SizeBytes)
	}
	return f
}

func applyHardware(q *pgx.Batch, s Stored) error {
	if s.Type != events.TypeInventoryReported {
		return nil
	}
	// The validator refused a report that breaks the schema or
	// Inventory.Check, or names another machine than its stream, before
	// it was appended: what reaches here is whole. A decoding failure
	// would be a bug of this code, not of the rack's event.
	var d events.InventoryReported
	if err := s.DecodeData(&d); err != nil {
		return err
	}
	if _, err := uuid.Parse(d.MachineID); err != nil {
		return nil
	}
	rackID, err := uuid.Parse(events.RackIDFromSource(s.Source))
	if err != nil {
		return nil
	}
	inv, err := json.Marshal(d.Inventory)
	if err != nil {
		return fmt.Errorf("inventory of machine %s: %w", d.MachineID, err)
	}
	f := Figures(d.Inventory)
	summary, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("inventory of machine %s: %w", d.MachineID, err)
	}
	at := d.Inventory.CollectedAt
	// The history row first, compared with the inventory current before
	// this report; then the report becomes current unless it was
	// collected before the current one. Both only for a machine there is.
	q.Queue(`INSERT INTO machine_hardware_history (event_id, machine_id, position, rack_id, operation_id, collected_at, reported_at,
			summary, first, stale, diff)
		SELECT $1, m.id, $3, $4, $5, $6, $7, $8, h.machine_id IS NULL, coalesce(h.collected_at > $6, false),
			CASE WHEN h.machine_id IS NULL OR h.collected_at > $6 THEN '{}'::jsonb ELSE inventory_diff(h.inventory, $9::jsonb) END
		FROM machines m LEFT JOIN machine_hardware h ON h.machine_id = m.id
		WHERE m.id = $2`,
		s.ID, d.MachineID, s.Position, rackID.String(), d.OperationID, at, s.Time, summary, inv)
	q.Queue(`INSERT INTO machine_hardware (machine_id, inventory, arch, cpu_model, cpu_sockets, cpu_cores, cpu_threads, memory_bytes,
			memory_total_bytes, disk_count, disk_bytes, largest_disk_bytes, nic_count, firmware, secure_boot, collected_at, reported_at,
			rack_id, operation_id, event_id)
		SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20 FROM machines WHERE id = $1
		ON CONFLICT (machine_id) DO UPDATE SET inventory = excluded.inventory, arch = excluded.arch, cpu_model = excluded.cpu_model,
			cpu_sockets = excluded.cpu_sockets, cpu_cores = excluded.cpu_cores, cpu_threads = excluded.cpu_threads,
			memory_bytes = excluded.memory_bytes, memory_total_bytes = excluded.memory_total_bytes, disk_count = excluded.disk_count,
			disk_bytes = excluded.disk_bytes, largest_disk_bytes = excluded.largest_disk_bytes, nic_count = excluded.nic_count,
			firmware = excluded.firmware, secure_boot = excluded.secure_boot, collected_at = excluded.collected_at,
			reported_at = excluded.reported_at, rack_id = excluded.rack_id, operation_id = excluded.operation_id,
			event_id = excluded.event_id
		WHERE machine_hardware.collected_at <= excluded.collected_at`,
		d.MachineID, inv, f.Arch, f.CPUModel, f.Sockets, f.Cores, f.Threads, f.MemoryBytes, f.MemoryTotalBytes, f.Disks, f.DiskBytes,
		f.LargestDiskBytes, f.NICs, f.Firmware, f.SecureBoot, at, s.Time, rackID.String(), d.OperationID, s.ID)
	return nil
}

// Hardware is a machine's current hardware inventory as the region keeps
// it: the report's rack, operation and event, when the agent collected
// it and when the rack reported it, its figures and the whole inventory.
type Hardware struct {
	MachineID   string           `json:"machine_id"`
	RackID      string           `json:"rack_id"`
	OperationID string           `json:"operation_id"`
	EventID     string           `json:"event_id"`
	CollectedAt time.Time        `json:"collected_at"`
	ReportedAt  time.Time        `json:"reported_at"`
	Summary     HardwareFigures  `json:"summary"`
	Inventory   events.Inventory `json:"inventory"`
}

// HardwareReport is one report in a machine's hardware history: First
// for its first, Stale when collected before the inventory current then
// (recorded, not applied, not compared); Diff says what it changed (see
// inventory_diff in migrations/0019_machine_hardware.sql), {} when
// nothing did.
type HardwareReport struct {
	EventID     string          `json:"event_id"`
	RackID      string          `json:"rack_id"`
	OperationID string          `json:"operation_id"`
	CollectedAt time.Time       `json:"collected_at"`
	ReportedAt  time.Time       `json:"reported_at"`
	Summary     HardwareFigures `json:"summary"`
	First       bool            `json:"first"`
	Stale       bool            `json:"stale"`
	Diff        json.RawMessage `json:"diff"`
}

// notCommissioned is the answer for a machine without an inventory.
func notCommissioned(id string) error {
	return rackplane.Errorf(rackplane.ENOTFOUND, "machine %s has no hardware inventory: it was never commissioned "+
		"(a rack reports the inventory its commissioning agent takes)", id)
}

// GetHardware returns a machine's current hardware; ENOTFOUND, saying
// which, when there is no such machine or it was never commissioned.
func (db *DB) GetHardware(ctx context.Context, id string) (Hardware, error) {
	var h Hardware
	if _, err := uuid.Parse(id); err != nil {
		return h, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	var hwID *string
	var inv, summary []byte
	err := db.pool.QueryRow(ctx, `SELECT m.id::text, h.machine_id::text, coalesce(h.rack_id::text, ''), coalesce(h.operation_id, ''),
			coalesce(h.event_id::text, ''), coalesce(h.collected_at, 'epoch'), coalesce(h.reported_at, 'epoch'), h.inventory,
			jsonb_build_object('arch', h.arch, 'cpu_model', h.cpu_model, 'sockets', h.cpu_sockets, 'cores', h.cpu_cores,
				'threads', h.cpu_threads, 'memory_bytes', h.memory_bytes, 'memory_total_bytes', h.memory_total_bytes,
				'disks', h.disk_count, 'disk_bytes', h.disk_bytes, 'largest_disk_bytes', h.largest_disk_bytes, 'nics', h.nic_count,
				'firmware', h.firmware, 'secure_boot', h.secure_boot)
		FROM machines m LEFT JOIN machine_hardware h ON h.machine_id = m.id WHERE m.id = $1`, id).
		Scan(&h.MachineID, &hwID, &h.RackID, &h.OperationID, &h.EventID, &h.CollectedAt, &h.ReportedAt, &inv, &summary)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	if err != nil {
		return h, wrap("get hardware", err)
	}
	if hwID == nil {
		return Hardware{}, notCommissioned(id)
	}
	if err := json.Unmarshal(inv, &h.Inventory); err != nil {
		return h, fmt.Errorf("get hardware: inventory: %w", err)
	}
	if err := json.Unmarshal(summary, &h.Summary); err != nil {
		return h, fmt.Errorf("get hardware: summary: %w", err)
	}
	return h, nil
}

// HardwareHistory returns a machine's hardware reports, newest first, at
// most limit; ENOTFOUND when there is no such machine or it was never
// commissioned.
func (db *DB) HardwareHistory(ctx context.Context, id string, limit int) ([]HardwareReport, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, rackplane.Errorf(rackplane.ENOTFOUND, "no machine %s", id)
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	rows, err := db.pool.Query(ctx, `SELECT event_id::text, rack_id::text, operation_id, collected_at, reported_at, summary, first, stale, diff
		FROM machine_hardware_history WHERE machine_id = $1 ORDER BY position DESC LIMIT $2`, id, limit)
	if err != nil {
		return nil, wrap("hardware history", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HardwareReport, error) {
		var h HardwareReport
		var summary []byte
		if err := r.Scan(&h.EventID, &h.RackID, &h.OperationID, &h.CollectedAt, &h.ReportedAt, &summary, &h.First, &h.Stale, &h.Diff); err != nil {
			return h, err
		}
		return h, json.Unmarshal(summary, &h.Summary)
	})
	if err != nil {
		return nil, wrap("hardware history", err)
	}
	if len(out) == 0 {
		// Say which of the two it is.
		if _, err := db.GetHardware(ctx, id); err != nil {
			return nil, err
		}
	}
	return out, nil
}
