package events

import "time"

// Event types of a rack's external storage providers.
const (
	// TypeVolumeActionCompleted reports the outcome of one provider action
	// on one volume, success or failure alike, on stream volume/<id>.
	TypeVolumeActionCompleted = "rackplane.rack.volume_action_completed.v1"
	// TypeStorageProvidersChanged carries a rack's full list of storage
	// providers, valid or not, whenever what is on disk changes.
	TypeStorageProvidersChanged = "rackplane.rack.storage_providers_changed.v1"
)

// VolumeActionCompleted is the data of TypeVolumeActionCompleted.
type VolumeActionCompleted struct {
	Action     string    `json:"action"`
	VolumeID   string    `json:"volume_id"`
	VolumeName string    `json:"volume_name"`
	Machine    string    `json:"machine"`
	Provider   string    `json:"provider"`
	OK         bool      `json:"ok"`
	State      string    `json:"state"`
	SizeMiB    int64     `json:"size_mib,omitempty"`
	Device     string    `json:"device,omitempty"`
	URIs       []string  `json:"uris,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS int64     `json:"duration_ms"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	ErrorCode  string    `json:"error_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	OutputTail []string  `json:"output_tail,omitempty"`
	// SnapshotName is the snapshot a snapshot action took, or tried to.
	// On success, StartedAt is the snapshot's time.
	SnapshotName string `json:"snapshot_name,omitempty"`
	// Open and OpenExclusive are the volume's open state after the
	// action, on every event, like State.
	Open          bool `json:"open,omitempty"`
	OpenExclusive bool `json:"open_exclusive,omitempty"`
}

// VolumeSnapshot is a snapshot taken of a volume: its name, given by the
// caller, and when the snapshot action started.
type VolumeSnapshot struct {
	Name    string    `json:"name"`
	TakenAt time.Time `json:"taken_at"`
}

// StorageProvider is one provider in TypeStorageProvidersChanged.
type StorageProvider struct {
	Name       string             `json:"name"`
	Path       string             `json:"path"`
	Valid      bool               `json:"valid"`
	Reason     string             `json:"reason,omitempty"`
	Parameters []StorageParameter `json:"parameters"`
	Optional   []string           `json:"optional_actions,omitempty"`
}

// StorageParameter is a parameter a provider declares in parameters.list.
type StorageParameter struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// StorageProvidersChanged is the data of TypeStorageProvidersChanged.
type StorageProvidersChanged struct {
	Providers []StorageProvider `json:"providers"`
}
