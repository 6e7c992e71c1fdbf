package postgres

import (
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// machineColumnTypes are the types of selectMachine's columns, in order, as
// decodeMachine reads them.
var machineColumnTypes = [...]uint32{
	pgtype.TextOID,        // id
	pgtype.TextOID,        // hostname
	pgtype.TextArrayOID,   // macs
	pgtype.TextOID,        // arch
	pgtype.TextOID,        // boot_rack_id
	pgtype.TextOID,        // status
	pgtype.TextOID,        // status_reason
	pgtype.TextOID,        // origin
	pgtype.TextOID,        // os
	pgtype.TextOID,        // release
	pgtype.TextOID,        // subarch
	pgtype.TextOID,        // image_version_id
	pgtype.TextOID,        // deploy_rack_id
	pgtype.TextOID,        // preseed_name
	pgtype.Int8OID,        // preseed_version
	pgtype.TextOID,        // deployment_id
	pgtype.TimestamptzOID, // deploy_started_at
	pgtype.TimestamptzOID, // deployed_at
	pgtype.TimestamptzOID, // created_at
	pgtype.TimestamptzOID, // updated_at
	pgtype.Int8OID,        // version
	pgtype.TextOID,        // boot_file
	pgtype.TextOID,        // power_state
	pgtype.TimestamptzOID, // power_checked_at
	pgtype.TextOID,        // power_outcome
	pgtype.TextOID,        // power_error
	pgtype.TextArrayOID,   // tags
	pgtype.JSONBOID,       // hardware
}

// scanMachineRow scans a row of selectMachine into m. The columns are
// read from their binary form here (decodeMachine): pgx's Scan plans
// each column of each query anew and goes through reflection for every
// value and array element, which was most of the cost of a page of
// machines. A row decodeMachine does not take as it is (a column of
// another type or format, a NULL where the column has none, an infinite
// time, an array of more dimensions or with NULLs) goes to pgx's Scan,
// so that the result, or the error, is what pgx gives.
func scanMachineRow(row pgx.CollectableRow, m *rackplane.Machine, dest []any) error {
	if decodeMachine(row.FieldDescriptions(), row.RawValues(), m) {
		return nil
	}
	*m = rackplane.Machine{}
	return row.Scan(machineDest(m, dest)...)
}

// decodeMachine fills m from vals, reporting false where it cannot (see
// scanMachineRow).
func decodeMachine(fds []pgconn.FieldDescription, vals [][]byte, m *rackplane.Machine) bool {
	if len(fds) != len(machineColumnTypes) || len(vals) != len(machineColumnTypes) {
		return false
	}
	for i, fd := range fds {
		// Text is the same bytes in either format (pgx asks for it as
		// text, and for jsonb); the others are read in binary only.
		if fd.DataTypeOID != machineColumnTypes[i] ||
			fd.Format != pgtype.BinaryFormatCode && fd.DataTypeOID != pgtype.TextOID && fd.DataTypeOID != pgtype.JSONBOID {
			return false
		}
	}
	d := machineDecoder{vals: vals, ok: true}
	m.ID = d.text(0)
	m.Hostname = d.text(1)
	m.MACs = d.texts(2)
	m.Arch = d.common(3)
	m.BootRackID = d.textOrNil(4)
	m.Status = d.common(5)
	m.StatusReason = d.text(6)
	m.Origin = d.common(7)
	m.OS = d.text(8)
	m.Release = d.text(9)
	m.Subarch = d.text(10)
	m.ImageVersionID = d.text(11)
	m.DeployRackID = d.textOrNil(12)
	m.PreseedName = d.text(13)
	m.PreseedVersion = d.int8(14)
	m.DeploymentID = d.textOrNil(15)
	m.DeployStartedAt = d.timeOrNil(16)
	m.DeployedAt = d.timeOrNil(17)
	m.CreatedAt = d.time(18)
	m.UpdatedAt = d.time(19)
	m.Version = d.int8(20)
	m.BootFile = d.text(21)
	m.PowerState = d.common(22)
	m.PowerCheckedAt = d.timeOrNil(23)
	m.PowerOutcome = d.common(24)
	m.PowerError = d.text(25)
	m.Tags = d.texts(26)
	if v := vals[27]; v != nil {
		if fds[27].Format == pgtype.BinaryFormatCode {
			// jsonb's binary form is a version byte, then the text.
			if len(v) == 0 || v[0] != 1 {
				return false
			}
			v = v[1:]
		}
		m.Hardware = new(rackplane.HardwareSummary)
		if json.Unmarshal(v, m.Hardware) != nil {
			return false
		}
	}
	return d.ok
}

// machineDecoder reads binary column values; ok turns false at the first
// it cannot read.
type machineDecoder struct {
	vals [][]byte
	ok   bool
}

func (d *machineDecoder) text(i int) string {
	v := d.vals[i]
	if v == nil {
		d.ok = false
	}
	return string(v)
}

// common reads a text column whose values many machines share
// (statuses, architectures, origins, power states and outcomes): those
// are these constants, and cost no allocation per row.
func (d *machineDecoder) common(i int) string {
	v := d.vals[i]
	switch string(v) {
	case "":
		if v == nil {
			d.ok = false
		}
		return ""
	case events.MachineNew:
		return events.MachineNew
	case events.MachineCommissioning:
		return events.MachineCommissioning
	case events.MachineReady:
		return events.MachineReady
	case events.MachineDeploying:
		return events.MachineDeploying
	case events.MachineDeployed:
		return events.MachineDeployed
	case events.MachineReleasing:
		return events.MachineReleasing
	case events.MachineFailed:
		return events.MachineFailed
	case events.MachineBroken:
		return events.MachineBroken
	case events.MachineRescue:
		return events.MachineRescue
	case events.MachineErasing:
		return events.MachineErasing
	case "amd64":
		return "amd64"
	case "arm64":
		return "arm64"
	case "api":
		return "api"
	case "discovered":
		return "discovered"
	case "on":
		return "on"
	case "off":
		return "off"
	case "unknown":
		return "unknown"
	case "ok":
		return "ok"
	}
	return string(v)
}

func (d *machineDecoder) textOrNil(i int) *string {
	if d.vals[i] == nil {
		return nil
	}
	s := string(d.vals[i])
	return &s
}

func (d *machineDecoder) int8(i int) int64 {
	v := d.vals[i]
	if len(v) != 8 {
		d.ok = false
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 UTC.
const pgEpochMicros = 946_684_800 * 1_000_000

func (d *machineDecoder) time(i int) time.Time {
	t, ok := decodeTimestamptz(d.vals[i])
	if !ok {
		d.ok = false
	}
	return t
}

func (d *machineDecoder) timeOrNil(i int) *time.Time {
	if d.vals[i] == nil {
		return nil
	}
	t := d.time(i)
	return &t
}

// decodeTimestamptz reads timestamptz's binary form as pgx does: local
// time, microseconds; infinities and NULL are not read.
func decodeTimestamptz(v []byte) (time.Time, bool) {
	if len(v) != 8 {
		return time.Time{}, false
	}
	us := int64(binary.BigEndian.Uint64(v))
	if us == 1<<63-1 || us == -1<<63 {
		return time.Time{}, false
	}
	return time.Unix(pgEpochMicros/1_000_000+us/1_000_000, (pgEpochMicros%1_000_000*1_000)+(us%1_000_000*1_000)), true
}

// texts reads a text[] of one dimension without NULLs; an empty array is
// an empty slice, as pgx gives it.
func (d *machineDecoder) texts(i int) []string {
	v := d.vals[i]
	if len(v) < 12 {
		d.ok = false
		return nil
	}
	ndim := binary.BigEndian.Uint32(v)
	hasNull := binary.BigEndian.Uint32(v[4:])
	if ndim == 0 {
		return []string{}
	}
	if ndim != 1 || hasNull != 0 || len(v) < 20 {
		d.ok = false
		return nil
	}
	n := int(int32(binary.BigEndian.Uint32(v[12:])))
	v = v[20:]
	if n < 0 || n > len(v)/4 {
		d.ok = false
		return nil
	}
	out := make([]string, n)
	for j := range out {
		if len(v) < 4 {
			d.ok = false
			return nil
		}
		l := int(int32(binary.BigEndian.Uint32(v)))
		v = v[4:]
		if l < 0 || l > len(v) {
			d.ok = false
			return nil
		}
		out[j] = string(v[:l])
		v = v[l:]
	}
	if len(v) != 0 {
		d.ok = false
		return nil
	}
	return out
}
