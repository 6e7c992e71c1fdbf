package events

import "time"

// The region's record of power parameters and power actions, on the
// machine's stream machine/<id>. None of them carries a credential: the
// BMC password is sealed in the region's database and crosses the wire
// only in a PowerRequest to the one rack that drives the machine. These
// events say whether a password is set and give its keyed fingerprint
// (secrets.Keyring.Fingerprint), which tells nothing about it without the
// region's secrets key.
const (
	// TypePowerParametersSet: an operator set how the machine's BMC is
	// reached (replacing what was set before).
	TypePowerParametersSet = "rackplane.region.power_parameters_set.v1"
	// TypePowerParametersCleared: an operator removed them.
	TypePowerParametersCleared = "rackplane.region.power_parameters_cleared.v1"
	// TypePowerActionRequested: the region asked a rack to run a power
	// action on the machine; the outcome is the rack's
	// TypePowerActionCompleted.
	TypePowerActionRequested = "rackplane.region.power_action_requested.v1"
	// TypePowerStateChanged: the region's periodic poll of the machine's
	// BMC found its power state (or the outcome of asking) other than
	// the machine showed. A poll that finds nothing new is no event: it
	// only moves the machine's power_checked_at.
	TypePowerStateChanged = "rackplane.region.power_state_changed.v1"
)

// PowerStateChanged is the data of TypePowerStateChanged: what the poll
// found (State, Outcome, Error as a rack's PowerReply has them), what the
// machine showed before, and when the rack answered.
type PowerStateChanged struct {
	MachineID     string    `json:"machine_id"`
	RackID        string    `json:"rack_id"`
	Driver        string    `json:"driver"`
	State         string    `json:"state"`
	PreviousState string    `json:"previous_state"`
	Outcome       string    `json:"outcome"`
	Error         string    `json:"error,omitempty"`
	CheckedAt     time.Time `json:"checked_at"`
}

// PowerParametersSet is the data of TypePowerParametersSet: the
// parameters without the password. RackID is the rack an operator chose
// to drive the machine; empty means the machine's boot rack.
type PowerParametersSet struct {
	MachineID           string            `json:"machine_id"`
	Driver              string            `json:"driver"`
	Address             string            `json:"address"`
	Port                int               `json:"port"`
	Username            string            `json:"username"`
	Extra               map[string]string `json:"extra"`
	RackID              string            `json:"rack_id,omitempty"`
	PasswordSet         bool              `json:"password_set"`
	PasswordFingerprint string            `json:"password_fingerprint,omitempty"`
}

// PowerParametersCleared is the data of TypePowerParametersCleared.
type PowerParametersCleared struct {
	MachineID string `json:"machine_id"`
}

// PowerActionRequested is the data of TypePowerActionRequested.
type PowerActionRequested struct {
	MachineID  string      `json:"machine_id"`
	RackID     string      `json:"rack_id"`
	Driver     string      `json:"driver"`
	Action     PowerAction `json:"action"`
	BootDevice string      `json:"boot_device,omitempty"`
}
