package rackplane

import "time"

// Machine is a machine as the region knows it: the projection of its
// stream. Which status it may move to next is decided by package
// region/machine alone.
type Machine struct {
	ID         string   `json:"id"`
	Hostname   string   `json:"hostname"`
	MACs       []string `json:"macs"`
	Arch       string   `json:"arch"`
	BootRackID *string  `json:"boot_rack_id"`
	// BootFile is the machine's own boot file, for firmware that needs
	// another than its rack would choose ("": the rack chooses).
	BootFile string `json:"boot_file,omitempty"`
	Status   string `json:"status"`
	// StatusReason says why the machine is in its status when that was
	// not the operator's plain request: what failed, why it is broken.
	StatusReason   string  `json:"status_reason,omitempty"`
	Origin         string  `json:"origin"`
	OS             string  `json:"os,omitempty"`
	Release        string  `json:"release,omitempty"`
	Subarch        string  `json:"subarch,omitempty"`
	ImageVersionID string  `json:"image_version_id,omitempty"`
	DeployRackID   *string `json:"deploy_rack_id,omitempty"`
	PreseedName    string  `json:"preseed_name,omitempty"`
	PreseedVersion int64   `json:"preseed_version,omitempty"`
	// DeploymentID names the machine's operation, current or last: the
	// machine_deploying event of a deployment, the machine_commissioning
	// event of a commissioning. Installers' and agents' outcomes are
	// taken for it alone.
	DeploymentID    *string    `json:"deployment_id,omitempty"`
	DeployStartedAt *time.Time `json:"deploy_started_at,omitempty"`
	// DeployedAt is when the installed system last reported success; it
	// stays while the machine is broken or in rescue, so it can go back to
	// deployed, and goes with a release.
	DeployedAt *time.Time `json:"deployed_at,omitempty"`
	// PowerState is the machine's power (on, off, unknown) as the last
	// power action a rack ran on it left it, at PowerCheckedAt (nil:
	// never); PowerOutcome and PowerError are that action's outcome and,
	// when it failed, why. Power events are not changes of the machine:
	// they move neither Version nor UpdatedAt.
	PowerState     string     `json:"power_state"`
	PowerCheckedAt *time.Time `json:"power_checked_at,omitempty"`
	PowerOutcome   string     `json:"power_outcome,omitempty"`
	PowerError     string     `json:"power_error,omitempty"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	// Tags are operators' labels of the machine, sorted, each once
	// (never null).
	Tags []string `json:"tags"`
	// Hardware sums up the machine's latest hardware inventory; nil
	// when it was never commissioned (GET .../hardware has the whole).
	Hardware *HardwareSummary `json:"hardware,omitempty"`
	// Version counts the changes of the machine; it is the API's ETag.
	Version int64 `json:"version"`
	// Actions are the commands the machine's status allows now, so that
	// clients offer only those (the region refuses the others anyway).
	Actions []string `json:"actions"`
}

// HardwareSummary is the short form of a machine's hardware inventory:
// physical cores and logical CPUs, memory (installed when the agent knew
// it, else what the kernel could use), whole disks and their total size,
// and the firmware it booted with (bios or uefi).
type HardwareSummary struct {
	Cores       int    `json:"cores"`
	Threads     int    `json:"threads"`
	MemoryBytes int64  `json:"memory_bytes"`
	Disks       int    `json:"disks"`
	DiskBytes   int64  `json:"disk_bytes"`
	Firmware    string `json:"firmware"`
}
