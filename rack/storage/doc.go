// Package storage runs a rack's external storage providers, in the manner
// of Ganeti's ExtStorage interface: a provider is a directory of executable
// scripts (create, attach, detach, remove, grow, setinfo, verify; snapshot,
// open and close optional) and a parameters.list, found in a search path
// on the rack's disk. Dropping such a directory onto a rack is all it
// takes to plug in shared storage.
//
// The Manager keeps the list of providers in step with the disk, runs only
// the fixed set of actions (an optional one only on a provider that has
// its script) with a clean environment (VOL_*, EXTP_*, and RunMarker), a
// timeout that kills everything the script started (its process group,
// children that left it with setsid, orphans still carrying the run's
// RunMarker), one bounded log per volume, and a small state record per
// volume written before and after every action. A script dies with rackd.
// Every result, success or failure with the tail of the script's output,
// becomes a volume_action_completed event.
//
// As in Ganeti, snapshot gets VOL_SNAPSHOT_NAME and VOL_SNAPSHOT_SIZE (MiB)
// and may run on any volume the rack created; open gets VOL_OPEN_EXCLUSIVE
// and needs an attached volume; an open volume must be closed before it is
// detached or removed.
//
// Volume names carry the volume's stable id and its owner
// (rp-<uuid>-<machine>), and VOL_METADATA names the owning machine on every
// action, so a provider can tag its volumes and they can be mapped back to
// machines even if the region's data is lost.
//
// What crosses the wire is the contract's, in package events: the action
// names, the rpc request (events.StorageRequest) and reply
// (events.VolumeRecord, which is also the record on disk), the volume
// states and the snapshot name rule; the types here are aliases of those.
// RegisterRPC checks every request against its schema file before
// decoding it.
package storage
