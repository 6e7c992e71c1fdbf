package events

import "time"

// Machine, deployment and preseed event types, all emitted by the region.
const (
	TypeMachineCreated   = "rackplane.region.machine_created.v1"
	TypeMachineUpdated   = "rackplane.region.machine_updated.v1"
	TypeMachineDeleted   = "rackplane.region.machine_deleted.v1"
	TypeMachineDeploying = "rackplane.region.machine_deploying.v1"
	TypeMachineDeployed  = "rackplane.region.machine_deployed.v1"
	TypeMachineReleased  = "rackplane.region.machine_released.v1"
	TypeMachineFailed    = "rackplane.region.machine_failed.v1"

	// The lifecycle beyond deployment: commissioning (hardware inventory),
	// a release that has work to do (power off, erase), an operator's
	// broken/fixed marks, and rescue mode.
	TypeMachineCommissioning = "rackplane.region.machine_commissioning.v1"
	TypeMachineCommissioned  = "rackplane.region.machine_commissioned.v1"
	TypeMachineReleasing     = "rackplane.region.machine_releasing.v1"
	TypeMachineBroken        = "rackplane.region.machine_broken.v1"
	TypeMachineFixed         = "rackplane.region.machine_fixed.v1"
	TypeMachineRescueEntered = "rackplane.region.machine_rescue_entered.v1"
	TypeMachineRescueExited  = "rackplane.region.machine_rescue_exited.v1"
	// TypeMachineErasing starts a release that erases the machine's
	// disks first: it boots the ephemeral environment, whose agent wipes
	// them; the machine is ready only once the agent says it did.
	TypeMachineErasing = "rackplane.region.machine_erasing.v1"

	TypePreseedVersionCreated = "rackplane.region.preseed_version_created.v1"
	TypePreseedServed         = "rackplane.region.preseed_served.v1"

	// TypeDiscoveryRefused sums up the boots of unknown MACs on one rack
	// that made no machine in an interval, a discovery cap reached.
	TypeDiscoveryRefused = "rackplane.region.discovery_refused.v1"
)

// DiscoveryRefused is the data of TypeDiscoveryRefused: at most one per
// rack and interval, on the rack's stream.
type DiscoveryRefused struct {
	RackID string    `json:"rack_id"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
	// Refused counts boots refused (a MAC that boots twice, twice), by
	// the cap that refused them (rack_rate, new); MACs are the first few.
	Refused int64            `json:"refused"`
	ByLimit map[string]int64 `json:"by_limit"`
	MACs    []string         `json:"macs,omitempty"`
	// The caps in force.
	PerRackPerMinute int `json:"per_rack_per_minute"`
	MaxNew           int `json:"max_new"`
}

// Machine statuses. Package region/machine decides which command moves a
// machine from one to another.
const (
	MachineNew           = "new"
	MachineCommissioning = "commissioning"
	MachineReady         = "ready"
	MachineDeploying     = "deploying"
	MachineDeployed      = "deployed"
	MachineReleasing     = "releasing"
	MachineFailed        = "failed"
	MachineBroken        = "broken"
	MachineRescue        = "rescue"
	MachineErasing       = "erasing"
)

// MachineStatuses lists every machine status, in lifecycle order.
var MachineStatuses = []string{MachineNew, MachineCommissioning, MachineReady, MachineDeploying, MachineDeployed,
	MachineReleasing, MachineErasing, MachineFailed, MachineBroken, MachineRescue}

// Erase modes of a release (rackplane.erase= on the agent's command
// line): none leaves the disks as they are; quick wipes the partition
// tables and the signatures of filesystems, LVM and RAID at the start and
// end of each partition and of the disk; full overwrites every byte with
// zeros.
const (
	EraseNone  = "none"
	EraseQuick = "quick"
	EraseFull  = "full"
)

// EraseModes lists the erase modes.
var EraseModes = []string{EraseNone, EraseQuick, EraseFull}

// MachineState is the data of TypeMachineCreated and TypeMachineUpdated:
// the machine's descriptive fields after the change.
type MachineState struct {
	MachineID  string   `json:"machine_id"`
	Hostname   string   `json:"hostname"`
	MACs       []string `json:"macs"`
	Arch       string   `json:"arch"`
	BootRackID string   `json:"boot_rack_id,omitempty"`
	BootFile   string   `json:"boot_file,omitempty"`
	Origin     string   `json:"origin,omitempty"` // api or discovered, on creation
	Status     string   `json:"status,omitempty"` // on creation
}

// MachineRef is the data of events that only name a machine.
type MachineRef struct {
	MachineID string `json:"machine_id"`
	Reason    string `json:"reason,omitempty"`
}

// Deployment is the data of TypeMachineDeploying: what the deployment
// pinned.
type Deployment struct {
	MachineID      string `json:"machine_id"`
	OS             string `json:"os"`
	Release        string `json:"release"`
	Arch           string `json:"arch"`
	Subarch        string `json:"subarch"`
	ImageVersionID string `json:"image_version_id"`
	RackID         string `json:"rack_id"`
	PreseedName    string `json:"preseed_name,omitempty"`
	PreseedVersion int64  `json:"preseed_version,omitempty"`
}

// PreseedScope says which machines a preseed is for; the most specific
// scope that matches a machine wins.
type PreseedScope struct {
	Kind      string `json:"kind"` // machine, os_release_arch, os_release, os, global
	MachineID string `json:"machine_id,omitempty"`
	OS        string `json:"os,omitempty"`
	Release   string `json:"release,omitempty"`
	Arch      string `json:"arch,omitempty"`
}

// PreseedVersionCreated is the data of TypePreseedVersionCreated.
type PreseedVersionCreated struct {
	Name    string       `json:"name"`
	Version int64        `json:"version"`
	Content string       `json:"content"`
	Scope   PreseedScope `json:"scope"`
	// Origin is "operator" or "rack:<id>" for a rack's shipped default.
	Origin  string `json:"origin"`
	Author  string `json:"author"`
	Comment string `json:"comment,omitempty"`
	BasedOn int64  `json:"based_on,omitempty"`
	Current bool   `json:"current"`
	// Format is the version's format (PreseedFormat*): its author's, or
	// DetectPreseedFormat's. Absent on versions saved before formats,
	// which are read as DetectPreseedFormat of their content.
	Format string `json:"format,omitempty"`
}

// PreseedServed is the data of TypePreseedServed.
type PreseedServed struct {
	MachineID string `json:"machine_id"`
	Name      string `json:"name"`
	Version   int64  `json:"version"`
	RackID    string `json:"rack_id"`
	Remote    string `json:"remote,omitempty"`
}
