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
	// PowerPollIntervalSeconds is how often the region is to poll the
	// power state of the machines this rack drives (absent or 0: never).
	// It is the rack's to say: its operator knows what its BMC network
	// bears.
	PowerPollIntervalSeconds int64 `json:"power_poll_interval_seconds,omitempty"`
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
	// Installer is the installer family of the version (one of the
	// Installer* constants): it decides the kernel parameters and the
	// preseed URL form a deployment's boot gets, and which preseed
	// formats fit. Absent: InstallerCustom.
	Installer string `json:"installer,omitempty"`
	// Disk, on a disk image (installer InstallerAgent), names the file
	// the agent writes to the machine's disk and how.
	Disk *DiskImage `json:"disk,omitempty"`
}

// Installer families of an image version.
const (
	// InstallerDebian is debian-installer (d-i): auto=true
	// priority=critical url=<preseed> and netcfg/* from the machine.
	InstallerDebian = "debian-installer"
	// InstallerAutoinstall is Ubuntu's subiquity autoinstall:
	// autoinstall ds=nocloud-net;s=<metadata URL>.
	InstallerAutoinstall = "ubuntu-autoinstall"
	// InstallerAnaconda is Fedora/RHEL's anaconda: inst.ks=<kickstart>.
	InstallerAnaconda = "anaconda"
	// InstallerAgent is a disk image the ephemeral environment's agent
	// writes (Disk names it); the installed system reads the rack's
	// metadata service.
	InstallerAgent = "agent"
	// InstallerCustom boots the image's kernel with url=<preseed> and
	// the machine's parameters, as every image did before families.
	InstallerCustom = "custom"
)

// Installers are the installer families, in the order documents list them.
var Installers = []string{InstallerDebian, InstallerAutoinstall, InstallerAnaconda, InstallerAgent, InstallerCustom}

// Compression of a disk image file.
const (
	DiskCompressionNone = "none"
	DiskCompressionGzip = "gzip"
	DiskCompressionZstd = "zstd"
)

// DiskImage describes the disk image file of a version: what the agent
// streams from its rack, decompresses, verifies and writes from the
// first byte of the target disk.
type DiskImage struct {
	// File is the name of one of the version's files.
	File string `json:"file"`
	// Compression is how File is compressed: none, gzip or zstd.
	Compression string `json:"compression"`
	// Size and SHA256 are those of the decompressed image, the bytes
	// written to the disk (the file's own are in Files).
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Table is the image's partition table, gpt or msdos, when the
	// layout is given.
	Table string `json:"table,omitempty"`
	// RootPartition is the number (1-based) of the root partition, and
	// GrowRoot says whether the agent grows it to the end of the disk.
	// Only the last partition of the table can grow.
	RootPartition int  `json:"root_partition,omitempty"`
	GrowRoot      bool `json:"grow_root,omitempty"`
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
