package storage

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Request is what the region asks of a volume (events.StorageRequest).
type Request = events.StorageRequest

// maxSizeMiB bounds sizes at 1 EiB: anything larger is a typo or an
// overflow, not a disk.
const maxSizeMiB = 1 << 40

const (
	maxParamValue  = 4096
	maxMachineName = 128
	maxNameOwner   = 32
)

var (
	uuidRE    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	machineRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)
)

func isUUID(s string) bool { return uuidRE.MatchString(s) }

// checkRequest validates the parts of a request that do not depend on
// the provider or the volume's record.
func checkRequest(r Request) error {
	if !isUUID(r.VolumeID) {
		return rackplane.Errorf(rackplane.EINVALID, "volume_id %.80q is not a lower-case UUID", r.VolumeID)
	}
	if r.Machine != "" && (len(r.Machine) > maxMachineName || !machineRE.MatchString(r.Machine)) {
		return rackplane.Errorf(rackplane.EINVALID, "machine %.80q is not letters, digits, '.', '_', ':' or '-' (at most %d)", r.Machine, maxMachineName)
	}
	if r.Provider != "" && !providerNameRE.MatchString(r.Provider) {
		return rackplane.Errorf(rackplane.EINVALID, "provider %.80q is not a provider name", r.Provider)
	}
	if r.SnapshotName != "" && !events.ValidSnapshotName(r.SnapshotName) {
		return rackplane.Errorf(rackplane.EINVALID, "snapshot_name %.80q is not letters, digits, '_', '.' or '-', starting with a letter or digit (at most 64)", r.SnapshotName)
	}
	if r.SizeMiB < 0 || r.SizeMiB > maxSizeMiB || r.NewSizeMiB < 0 || r.NewSizeMiB > maxSizeMiB {
		return rackplane.Errorf(rackplane.EINVALID, "sizes are in MiB, between 1 and %d", int64(maxSizeMiB))
	}
	if len(r.Parameters) > maxParameters {
		return rackplane.Errorf(rackplane.EINVALID, "at most %d parameters", maxParameters)
	}
	for k, v := range r.Parameters {
		if !paramNameRE.MatchString(k) || len(k) > maxParamName {
			return rackplane.Errorf(rackplane.EINVALID, "parameter name %.80q is not a parameter name", k)
		}
		if len(v) > maxParamValue || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return rackplane.Errorf(rackplane.EINVALID, "parameter %s: value must be text without NUL, at most %d bytes", k, maxParamValue)
		}
	}
	return nil
}

// VolumeName is the name a provider is given for a volume: the volume's
// stable id and its owning machine, so that the provider's own listing
// maps volumes back to machines even without the region's database (the
// point Ganeti's review made about its 'plain' LVs). The owner part is
// reduced to lower-case letters, digits and '-', at most 32 characters, so
// the name is safe for LVM, Ceph, ZFS and iSCSI naming rules alike.
func VolumeName(volumeID, machine string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(machine) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= maxNameOwner {
			break
		}
	}
	owner := strings.Trim(b.String(), "-")
	if len(owner) > maxNameOwner {
		owner = strings.Trim(owner[:maxNameOwner], "-")
	}
	if owner == "" {
		owner = "unowned"
	}
	return fmt.Sprintf("rp-%s-%s", volumeID, owner)
}

// metadata is VOL_METADATA: the owner, in a form a provider can store as
// a tag and a person can read back.
func metadata(machine string) string { return "rackplane-machine=" + machine }
