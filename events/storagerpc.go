package events

import (
	"regexp"
	"slices"
	"time"
)

// The storage rpc: the region asks the rack that has a volume to run one
// external storage provider action on it, under
// RackRPCSubject(rackID, StorageMethod(action)), with a StorageRequest;
// the rack answers with its VolumeRecord after the action. The action is
// the subject's, never the body's. Every outcome of a well-formed request
// is also a TypeVolumeActionCompleted event. MethodStorageProviders lists
// the rack's providers. The bodies' schema files are named by
// StorageRPCSchema.

// StorageAction is a provider action a rack may run. The set is fixed: a
// name that is not one of these never reaches a rack's disk.
type StorageAction string

// The actions of the ExtStorage interface that a rack runs.
const (
	StorageActionCreate  StorageAction = "create"
	StorageActionAttach  StorageAction = "attach"
	StorageActionDetach  StorageAction = "detach"
	StorageActionRemove  StorageAction = "remove"
	StorageActionGrow    StorageAction = "grow"
	StorageActionSetinfo StorageAction = "setinfo"
	StorageActionVerify  StorageAction = "verify"

	StorageActionSnapshot StorageAction = "snapshot"
	StorageActionOpen     StorageAction = "open"
	StorageActionClose    StorageAction = "close"
)

// StorageRequiredActions are the scripts every provider must have: a
// directory without one of them is not a provider.
var StorageRequiredActions = []StorageAction{StorageActionCreate, StorageActionAttach, StorageActionDetach,
	StorageActionRemove, StorageActionGrow, StorageActionSetinfo, StorageActionVerify}

// StorageOptionalActions are the scripts a provider may have, as in
// Ganeti. A provider without one is still valid; asking it for that
// action is refused before anything runs.
var StorageOptionalActions = []StorageAction{StorageActionSnapshot, StorageActionOpen, StorageActionClose}

// StorageActions lists every action that can run.
var StorageActions = slices.Concat(StorageRequiredActions, StorageOptionalActions)

// ParseStorageAction maps a name to a known action; anything else is
// refused.
func ParseStorageAction(name string) (StorageAction, bool) { return oneOf(name, StorageActions) }

// MethodStorageProviders is the rack rpc method that lists the rack's
// storage providers, valid or not: {} → [StorageProvider].
const MethodStorageProviders = "storage.providers"

// StorageMethod is the rack rpc method of an action: "storage.<action>".
func StorageMethod(a StorageAction) string { return "storage." + string(a) }

// StorageRPCSchema names the schema (file name under schema/ without
// .json) of a storage method's request or reply (part is PartRequest or
// PartReply). Every action takes the same body and answers the same
// record, so the ten storage.<action> methods share
// storage_rpc_action.<part>.v1; storage.providers has its own.
func StorageRPCSchema(method, part string) string {
	name := "action"
	if method == MethodStorageProviders {
		name = "providers"
	}
	return "storage_rpc_" + name + "." + part + ".v1"
}

// StorageRequest is the body of a storage.<action> request. Provider and
// Machine may be left out when the rack already has a record of the
// volume; Parameters left out mean those recorded at create. SnapshotName
// is for snapshot only, Exclusive for open only.
type StorageRequest struct {
	VolumeID     string            `json:"volume_id"`
	Machine      string            `json:"machine,omitempty"`
	Provider     string            `json:"provider,omitempty"`
	SizeMiB      int64             `json:"size_mib,omitempty"`
	NewSizeMiB   int64             `json:"new_size_mib,omitempty"`
	Parameters   map[string]string `json:"parameters,omitempty"`
	SnapshotName string            `json:"snapshot_name,omitempty"`
	Exclusive    bool              `json:"exclusive,omitempty"`
}

// A snapshot name reaches the provider as VOL_SNAPSHOT_NAME, and providers
// build file, LV and RBD names from it: no '/', no leading '-' or '.',
// nothing a shell or a naming rule chokes on. The schemas carry the same
// pattern.
var snapshotNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidSnapshotName reports whether name may name a snapshot.
func ValidSnapshotName(name string) bool { return snapshotNameRE.MatchString(name) }

// Volume states, as the rack that has the volume last saw them.
const (
	VolumeStateNone     = "none"     // never created through this rack
	VolumeStateCreating = "creating" // create was running when the rack stopped, or the region has only asked
	VolumeStateCreated  = "created"
	VolumeStateAttached = "attached"
	VolumeStateDetached = "detached"
	VolumeStateRemoved  = "removed"
	VolumeStateUnknown  = "unknown" // an action failed or was cut short midway
)

// VolumeAttachment is what attach made of a volume on a rack: a block
// device, access URIs for userspace clients (such as a hypervisor's rbd:
// or iscsi:// drivers), or both.
type VolumeAttachment struct {
	Device string   `json:"device,omitempty"`
	URIs   []string `json:"uris,omitempty"`
}

// VolumeRecord is a rack's own account of a volume it acted on, and the
// reply of every storage.<action>: the volume after the action.
type VolumeRecord struct {
	VolumeID   string            `json:"volume_id"`
	Name       string            `json:"volume_name"`
	Machine    string            `json:"machine"`
	Provider   string            `json:"provider"`
	Parameters map[string]string `json:"parameters,omitempty"`
	SizeMiB    int64             `json:"size_mib,omitempty"`
	State      string            `json:"state"`
	VolumeAttachment
	// Open is set by open and cleared by close; an open volume cannot be
	// detached or removed.
	Open          bool `json:"open,omitempty"`
	OpenExclusive bool `json:"open_exclusive,omitempty"`
	// Snapshots lists the snapshots taken through this rack, oldest
	// first. A provider has no action to delete one, so it only grows.
	Snapshots []VolumeSnapshot `json:"snapshots,omitempty"`

	// Pending is the action running on the volume, if any; the rest is
	// the outcome of the last action.
	Pending        string    `json:"pending,omitempty"`
	LastAction     string    `json:"last_action,omitempty"`
	LastOK         bool      `json:"last_ok"`
	LastError      string    `json:"last_error,omitempty"`
	LastOutputTail []string  `json:"last_output_tail,omitempty"`
	UpdatedAt      time.Time `json:"updated_at"`
}
