package events

// TypeVolumeRequested is the region's record that it asked a rack to
// create a volume: it names the rack every later action goes to, and keeps
// the parameters, which the rack's outcome events do not carry.
const TypeVolumeRequested = "rackplane.region.volume_requested.v1"

// VolumeRequested is the data of TypeVolumeRequested, on stream volume/<id>.
type VolumeRequested struct {
	VolumeID   string            `json:"volume_id"`
	MachineID  string            `json:"machine_id"`
	RackID     string            `json:"rack_id"`
	Provider   string            `json:"provider"`
	SizeMiB    int64             `json:"size_mib"`
	Parameters map[string]string `json:"parameters"`
}
