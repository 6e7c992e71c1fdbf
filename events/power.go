package events

import (
	"fmt"
	"log/slog"
	"time"
)

// The power rpc: the region asks the rack that drives a machine's BMC to
// run one power action, under RackRPCSubject(rackID, MethodPower), with a
// PowerRequest; the rack answers with a PowerReply. The request carries
// the BMC's credentials: the region sends it on that one rack's subject
// only, never on a broadcast one, and the rack keeps them for the action
// alone (nothing is written to its disk). Every request that passes the
// schema is answered with a PowerReply, failures of the BMC included
// (ok false, an outcome and an error), and published as a
// TypePowerActionCompleted event on the machine's stream, which never
// carries credentials. A request that breaks the schema is refused with
// the rpc error invalid and nothing else happens.
//
// The bodies' schema files are named by PowerRPCSchema; the drivers a
// rack has are in its capability snapshot (Capabilities.PowerDrivers).

// MethodPower is the rack rpc method that runs a power action.
const MethodPower = "power"

// TypePowerActionCompleted reports the outcome of one power action on one
// machine, success or failure alike, on stream machine/<id>.
const TypePowerActionCompleted = "rackplane.rack.power_action_completed.v1"

// PowerRPCSchema names the schema (file name under schema/ without .json)
// of the power method's request or reply (part is PartRequest or
// PartReply).
func PowerRPCSchema(part string) string { return "power_rpc." + part + ".v1" }

// PowerAction is a power action a rack's driver may run. The set is
// fixed: a name that is not one of these reaches no driver.
type PowerAction string

// The power actions. Cycle leaves a machine that was off switched on;
// soft_off asks the operating system to shut down (ACPI power button)
// and does not wait for it; set_boot sets the device of the next boot
// (BootDevicePXE or BootDeviceDisk, in PowerRequest.BootDevice).
const (
	PowerOn      PowerAction = "on"
	PowerOff     PowerAction = "off"
	PowerCycle   PowerAction = "cycle"
	PowerSoftOff PowerAction = "soft_off"
	PowerStatus  PowerAction = "status"
	PowerSetBoot PowerAction = "set_boot"
)

// PowerActions lists every action, in the order drivers report them.
var PowerActions = []PowerAction{PowerOn, PowerOff, PowerCycle, PowerSoftOff, PowerStatus, PowerSetBoot}

// ParsePowerAction maps a name to a known action; anything else is
// refused.
func ParsePowerAction(name string) (PowerAction, bool) { return oneOf(name, PowerActions) }

// oneOf returns the member of set named name.
func oneOf[T ~string](name string, set []T) (T, bool) {
	for _, a := range set {
		if string(a) == name {
			return a, true
		}
	}
	return "", false
}

// Boot devices of set_boot.
const (
	BootDevicePXE  = "pxe"
	BootDeviceDisk = "disk"
)

// Power states, as a rack last knew them: status reports what the BMC
// said; on and cycle leave on, off leaves off once the BMC took it;
// soft_off, set_boot and every failure leave unknown.
const (
	PowerStateOn      = "on"
	PowerStateOff     = "off"
	PowerStateUnknown = "unknown"
)

// Outcomes of a power action, in PowerReply and the event. They are few
// and stable, so that the region can decide on them (retry after timeout
// or unreachable, not after auth_failed or invalid).
const (
	PowerOutcomeOK = "ok"
	// PowerOutcomeFailed: the driver ran and the BMC, the script or the
	// endpoint said no, or said something the rack could not read.
	PowerOutcomeFailed = "failed"
	// PowerOutcomeTimeout: the action did not finish within the rack's
	// power timeout; what it was doing was stopped (a script and all it
	// started killed).
	PowerOutcomeTimeout = "timeout"
	// PowerOutcomeUnreachable: the BMC (or socket, or endpoint) did not
	// answer or refused the connection.
	PowerOutcomeUnreachable = "unreachable"
	// PowerOutcomeAuthFailed: the BMC refused the credentials.
	PowerOutcomeAuthFailed = "auth_failed"
	// PowerOutcomeUnsupported: this rack has no such driver, the driver
	// is not usable here (a tool missing), or it does not offer the
	// action (a script driver without set-boot).
	PowerOutcomeUnsupported = "unsupported"
	// PowerOutcomeInvalid: the parameters do not suit the driver (no
	// address, an extra it does not know, a template that does not
	// parse).
	PowerOutcomeInvalid = "invalid"
	// PowerOutcomeBusy: every one of the rack's power slots stayed taken
	// for as long as the rack waits for one; the action never ran.
	PowerOutcomeBusy = "busy"
)

// PowerOutcomes lists every outcome.
var PowerOutcomes = []string{PowerOutcomeOK, PowerOutcomeFailed, PowerOutcomeTimeout, PowerOutcomeUnreachable,
	PowerOutcomeAuthFailed, PowerOutcomeUnsupported, PowerOutcomeInvalid, PowerOutcomeBusy}

// PowerRequest is the body of a power request. BootDevice is for set_boot
// only, which needs it.
type PowerRequest struct {
	MachineID  string          `json:"machine_id"`
	Driver     string          `json:"driver"`
	Action     PowerAction     `json:"action"`
	BootDevice string          `json:"boot_device,omitempty"`
	Parameters PowerParameters `json:"parameters"`
	// Poll marks the region's periodic status polls: the rack answers
	// them but publishes no power_action_completed, so that polling
	// thousands of machines does not fill the event log; the region
	// records what changed.
	Poll bool `json:"poll,omitempty"`
}

// LogValue shows r to log/slog without the password: a slog JSON handler
// would otherwise marshal it whole.
func (r PowerRequest) LogValue() slog.Value {
	return slog.GroupValue(slog.String("machine_id", r.MachineID), slog.String("driver", r.Driver),
		slog.String("action", string(r.Action)), slog.String("boot_device", r.BootDevice), slog.Any("parameters", r.Parameters))
}

// PowerParameters say how to reach a machine's BMC. What Address means is
// the driver's: a host name or IP address (ipmi), a QMP socket's path
// (qemu), whatever a webhook's templates or a script make of it. Port 0
// is the driver's default. Extra holds a driver's own settings (lower
// case names: ipmi's cipher_suite, a webhook's URL templates, anything a
// script driver takes as POWER_EXTRA_<NAME>).
//
// Password is a secret. It crosses the wire in a PowerRequest only; the
// String, GoString and LogValue methods leave it out, so that neither
// fmt nor log/slog can print it by accident.
type PowerParameters struct {
	Address  string            `json:"address,omitempty"`
	Port     int               `json:"port,omitempty"`
	Username string            `json:"username,omitempty"`
	Password string            `json:"password,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
}

// masked is what the printing methods show of a password.
func masked(password string) string {
	if password == "" {
		return ""
	}
	return "(set)"
}

// String shows p without its password.
func (p PowerParameters) String() string {
	return fmt.Sprintf("{address:%s port:%d username:%s password:%s extra:%v}", p.Address, p.Port, p.Username, masked(p.Password), p.Extra)
}

// GoString shows p, for %#v, without its password.
func (p PowerParameters) GoString() string { return "events.PowerParameters" + p.String() }

// LogValue shows p to log/slog without its password.
func (p PowerParameters) LogValue() slog.Value {
	return slog.GroupValue(slog.String("address", p.Address), slog.Int("port", p.Port),
		slog.String("username", p.Username), slog.String("password", masked(p.Password)), slog.Any("extra", p.Extra))
}

// PowerReply is the result of a power request: the machine's power state
// as the action leaves it (PowerStateOn and the rest), whether the action
// succeeded, its outcome (PowerOutcomeOK and the rest) and, when it
// failed, why, in words meant for an operator (with the last lines of a
// script's output, the password masked).
type PowerReply struct {
	MachineID  string      `json:"machine_id"`
	Action     PowerAction `json:"action"`
	State      string      `json:"state"`
	OK         bool        `json:"ok"`
	Outcome    string      `json:"outcome"`
	Error      string      `json:"error,omitempty"`
	DurationMS int64       `json:"duration_ms"`
}

// PowerActionCompleted is the data of TypePowerActionCompleted: the reply
// with the driver, the boot device of set_boot and when the action
// started. It has no field for credentials, and its schema allows none.
type PowerActionCompleted struct {
	MachineID  string      `json:"machine_id"`
	Driver     string      `json:"driver"`
	Action     PowerAction `json:"action"`
	BootDevice string      `json:"boot_device,omitempty"`
	State      string      `json:"state"`
	OK         bool        `json:"ok"`
	Outcome    string      `json:"outcome"`
	Error      string      `json:"error,omitempty"`
	StartedAt  time.Time   `json:"started_at"`
	DurationMS int64       `json:"duration_ms"`
}

// PowerDriver is one power driver in a rack's capability snapshot: a
// built-in (ipmi, qemu, webhook) or a script driver found in the rack's
// power search path. Available says whether it can run here; Detail says
// why not, or what it runs (the ipmitool version, the script directory).
// Actions are those it offers.
type PowerDriver struct {
	Name      string        `json:"name"`
	Kind      string        `json:"kind"`
	Available bool          `json:"available"`
	Detail    string        `json:"detail,omitempty"`
	Actions   []PowerAction `json:"actions"`
}

// Kinds of power drivers.
const (
	PowerDriverBuiltin = "builtin"
	PowerDriverScript  = "script"
)
