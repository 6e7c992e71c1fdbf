package events

// Capability and OS registry event types.
const (
	TypeCapabilitiesReported = "rackplane.rack.capabilities_reported.v1"
	TypeCapabilitiesDiverged = "rackplane.region.capabilities_diverged.v1"
	TypeLicenceKeySet        = "rackplane.region.licence_key_set.v1"
)

// Capabilities is a rack's full account of what it can do: the data of
// TypeCapabilitiesReported, and the answer to the capabilities rpc.
type Capabilities struct {
	// Digest is the sha256 (hex) of the canonical JSON of everything else:
	// two snapshots agree exactly when their digests do.
	Digest           string            `json:"digest"`
	OSes             []OS              `json:"oses"`
	Bootloaders      []Bootloader      `json:"bootloaders"`
	StorageProviders []StorageProvider `json:"storage_providers"`
	// PowerDrivers are the power drivers of the rack, usable or not
	// (absent from racks that have none, and from those built before
	// power drivers).
	PowerDrivers []PowerDriver `json:"power_drivers,omitempty"`
	// Preseeds are the rack's default install configs, stored by the
	// region as versions whose origin is the rack.
	Preseeds []ShippedPreseed `json:"preseeds,omitempty"`
}

// ShippedPreseed is a default preseed a rack offers.
type ShippedPreseed struct {
	Name    string       `json:"name"`
	Scope   PreseedScope `json:"scope"`
	Content string       `json:"content"`
}

// OS is an operating system a rack can boot.
type OS struct {
	Name     string    `json:"name"`
	Title    string    `json:"title"`
	Releases []Release `json:"releases"`
}

// Release is one release of an OS.
type Release struct {
	Name               string `json:"name"`
	Title              string `json:"title"`
	Default            bool   `json:"default"`
	RequiresLicenceKey bool   `json:"requires_licence_key"`
	CanCommission      bool   `json:"can_commission"`
	Arches             []Arch `json:"arches"`
}

// Arch is an architecture/subarchitecture of a release with its images.
type Arch struct {
	Arch     string         `json:"arch"`
	Subarch  string         `json:"subarch"`
	Versions []ImageVersion `json:"versions"`
}

// ImageVersion is one explicit version of a boot image.
type ImageVersion struct {
	ID      string      `json:"id"`
	Label   string      `json:"label"`
	Version string      `json:"version"`
	Files   []ImageFile `json:"files"`
}

// Bootloader is one version of a bootloader.
type Bootloader struct {
	Name    string      `json:"name"`
	Arch    string      `json:"arch"`
	Version string      `json:"version"`
	Files   []ImageFile `json:"files"`
}

// CapabilitiesDiverged is the data of TypeCapabilitiesDiverged: a rack's
// live answer disagreed with its last reported snapshot.
type CapabilitiesDiverged struct {
	RackID         string `json:"rack_id"`
	ReportedDigest string `json:"reported_digest"`
	LiveDigest     string `json:"live_digest"`
}

// LicenceKeySet is the data of TypeLicenceKeySet. The key itself is never
// in the log: only a masked form and a fingerprint keyed by the region's
// secrets key (HMAC-SHA256), which tells whether two keys are the same
// but lets nobody without the key test guesses against it. Events from
// before keyed fingerprints carry the key's bare SHA-256; a fingerprint
// made under one secrets key differs from the same key's under the next.
type LicenceKeySet struct {
	OS          string `json:"os"`
	Release     string `json:"release"`
	Masked      string `json:"masked"`
	Fingerprint string `json:"fingerprint"`
	ValidatedBy string `json:"validated_by"`
}
