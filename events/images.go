package events

// Event types of a rack's boot image store. Each has a schema file of the
// same name under schema/.
const (
	TypeImageImported     = "rackplane.rack.image_imported.v1"
	TypeImageImportFailed = "rackplane.rack.image_import_failed.v1"
	TypeImageRemoved      = "rackplane.rack.image_removed.v1"
	TypeImageBlobRemoved  = "rackplane.rack.image_blob_removed.v1"
	TypeImageCorrupt      = "rackplane.rack.image_corrupt.v1"
)

// ImageFile is one file of an image version.
type ImageFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// ImageImported is the data of TypeImageImported: a version became visible.
type ImageImported struct {
	ImportID        string      `json:"import_id"`
	VersionID       string      `json:"version_id"`
	Kind            string      `json:"kind"`
	OS              string      `json:"os,omitempty"`
	Release         string      `json:"release,omitempty"`
	Arch            string      `json:"arch"`
	Subarch         string      `json:"subarch,omitempty"`
	Label           string      `json:"label,omitempty"`
	Bootloader      string      `json:"bootloader,omitempty"`
	Version         string      `json:"version"`
	Files           []ImageFile `json:"files"`
	Source          string      `json:"source"`
	BytesDownloaded int64       `json:"bytes_downloaded"`
}

// ImageImportFailed is the data of TypeImageImportFailed.
type ImageImportFailed struct {
	ImportID string `json:"import_id"`
	Source   string `json:"source"`
	Code     string `json:"code"`
	Error    string `json:"error"`
}

// ImageRemoved is the data of TypeImageRemoved: a version is gone.
type ImageRemoved struct {
	VersionID string      `json:"version_id"`
	Reason    string      `json:"reason"` // "gc" or "delete"
	Files     []ImageFile `json:"files"`
}

// ImageBlobRemoved is the data of TypeImageBlobRemoved: a stored file that
// no version uses any more was deleted.
type ImageBlobRemoved struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Reason string `json:"reason"` // "unused"
}

// ImageCorrupt is the data of TypeImageCorrupt: a stored file no longer
// matches its hash; it was quarantined and its versions became unusable.
type ImageCorrupt struct {
	SHA256       string   `json:"sha256"`
	ActualSHA256 string   `json:"actual_sha256,omitempty"`
	Size         int64    `json:"size"`
	Versions     []string `json:"versions"`
	Quarantine   string   `json:"quarantine"`
	DetectedBy   string   `json:"detected_by"` // "open" or "scrub"
}

// DebianNetbootSource is the debian_netboot source of an images.import
// request: Debian's netboot installer from the rack's installed
// debian-installer-12-netboot-<arch> packages. No arches: every arch
// whose package is installed.
type DebianNetbootSource struct {
	Arches []string `json:"arches,omitempty"`
}

// DebianNetbootArches are the arches a debian_netboot import knows the
// packages of.
var DebianNetbootArches = []string{"amd64", "arm64"}

// DebianNetbootPackage is the Debian package holding arch's netboot
// installer.
func DebianNetbootPackage(arch string) string { return "debian-installer-12-netboot-" + arch }

// SimplestreamsSource is the simplestreams source of an images.import
// request: a mirror in the simplestreams layout MAAS publishes
// (streams/v1/index.json and its product files). Exactly one of URL and
// Dir names the mirror's root, the directory streams/ is in.
type SimplestreamsSource struct {
	URL     string               `json:"url,omitempty"`
	Dir     string               `json:"dir,omitempty"`
	Filters SimplestreamsFilters `json:"filters,omitzero"`
	// Versions is how many of each product's newest versions to import
	// (the serials sort by date). Default DefaultSimplestreamsVersions.
	Versions int `json:"versions,omitempty"`
}

// SimplestreamsFilters select a mirror's products: a product matches
// when, for every list given, its field is one of the list.
type SimplestreamsFilters struct {
	OS      []string `json:"os,omitempty"`
	Release []string `json:"release,omitempty"`
	Arch    []string `json:"arch,omitempty"`
	Subarch []string `json:"subarch,omitempty"`
	Label   []string `json:"label,omitempty"`
}

// Bounds of a simplestreams import.
const (
	DefaultSimplestreamsVersions = 1
	MaxSimplestreamsVersions     = 20
)
