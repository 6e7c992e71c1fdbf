package events

import "time"

// Event types of booting. The region decides what each machine boots
// (boot_decision_set/cleared); racks report hand-off decisions, transfer
// outcomes, requests refused before a hand-off, and the ephemeral hand-off
// files they delete. Boot requests are unauthenticated, so a rack reports
// them one by one only within a rate per source and in all
// (rack/handoff), and the rest in one boot_requests_summarized event per
// interval: packets never become one event each.
const (
	TypeBootDecisionSet     = "rackplane.region.boot_decision_set.v1"
	TypeBootDecisionCleared = "rackplane.region.boot_decision_cleared.v1"

	TypeBootHandoff            = "rackplane.rack.boot_handoff.v1"
	TypeBootTransfer           = "rackplane.rack.boot_transfer.v1"
	TypeBootRequestRejected    = "rackplane.rack.boot_request_rejected.v1"
	TypeBootRequestsSummarized = "rackplane.rack.boot_requests_summarized.v1"
	TypeHandoffFileDeleted     = "rackplane.rack.handoff_file_deleted.v1"
)

// Boot purposes of a boot decision.
const (
	BootPurposeLocal   = "local"
	BootPurposeEnlist  = "enlist"
	BootPurposeInstall = "install"
	// The ephemeral environment's purposes: its agent commissions the
	// machine or erases its disks, or an operator repairs it.
	BootPurposeCommission = "commission"
	BootPurposeRescue     = "rescue"
	BootPurposeErase      = "erase"
	// BootPurposeDeploy boots the ephemeral environment whose agent
	// writes a disk image (installer InstallerAgent) to the machine's
	// disk: the decision names the image (DiskImage) and the disk
	// (TargetDisk).
	BootPurposeDeploy = "deploy"
)

// BootDecision is the data of TypeBootDecisionSet: what the machine with
// this MAC boots next. Kernel and Initrd are explicit versioned paths in a
// rack's image store, so a machine that started booting one version keeps
// getting it while a newer one arrives.
type BootDecision struct {
	MAC        string   `json:"mac"`
	MachineID  string   `json:"machine_id,omitempty"`
	Hostname   string   `json:"hostname,omitempty"`
	Purpose    string   `json:"purpose"`
	Arch       string   `json:"arch,omitempty"`
	Kernel     string   `json:"kernel,omitempty"`
	Initrd     string   `json:"initrd,omitempty"`
	ImageVer   string   `json:"image_version,omitempty"`
	Params     []string `json:"kernel_params,omitempty"`
	PreseedURL string   `json:"preseed_url,omitempty"`
	// Installer is the installer family (Installer*) of an install
	// decision's image: the rack renders that family's kernel
	// parameters and preseed URL form. Empty, custom and agent render
	// as before families: Params then url=<preseed>.
	Installer string `json:"installer,omitempty"`
	// DeploymentID names the deployment an install decision belongs to
	// (its machine_deploying event). The rack derives the machine's
	// credential from it, with a secret of its own, and adds it to the
	// preseed URL on the kernel command line: only that boot of that
	// machine can fetch the preseed. Not a secret itself. In an
	// ephemeral boot's decision (commission, rescue) it names the
	// operation (the machine_commissioning or machine_rescue_entered
	// event), from which the rack derives the credential of the boot's
	// agent (rack/agentapi) the same way.
	DeploymentID string `json:"deployment_id,omitempty"`
	// BootFile is the machine's own boot file (a firmware quirk): a
	// file name for PXE clients, an http(s) URL for HTTP boot and iPXE
	// clients. Empty: the rack chooses by the client's architecture.
	BootFile string `json:"boot_file,omitempty"`
	// RackID is the rack the decision is for (the machine's deploy or
	// boot rack): it goes on that rack's subject alone. Empty when the
	// machine has no rack yet; then no rack hears it until one asks.
	RackID string `json:"rack_id,omitempty"`
	// DiskImage, in a deploy decision, is the image version whose disk
	// image the agent writes; TargetDisk the disk it writes it to (a
	// name, serial or /dev/disk/by-id path of the machine's inventory).
	// A local decision that ends a disk image's writing keeps both, and
	// DeploymentID: the deployment is in progress until the installed
	// system phones home, and the rack's metadata service serves it
	// until then.
	DiskImage  string `json:"disk_image,omitempty"`
	TargetDisk string `json:"target_disk,omitempty"`
	// NICs, in a deploy decision of a disk image and the local decision
	// that follows its writing, are the machine's NICs as its latest
	// inventory reported them: the rack's metadata service renders the
	// installed system's network-config from them. Absent: from the
	// decisions' MACs.
	NICs []BootNIC `json:"nics,omitempty"`
}

// BootNIC is a NIC of a machine as its inventory reported it
// (InventoryNIC): Boot marks the one it booted from, Link is LinkUp,
// LinkDown or LinkUnknown.
type BootNIC struct {
	MAC  string `json:"mac"`
	Name string `json:"name,omitempty"`
	Boot bool   `json:"boot,omitempty"`
	Link string `json:"link,omitempty"`
}

// BootNICs are the NICs of inv for a boot decision (nil without one).
func BootNICs(inv *Inventory) []BootNIC {
	if inv == nil {
		return nil
	}
	var out []BootNIC
	for _, n := range inv.NICs {
		out = append(out, BootNIC{MAC: n.MAC, Name: n.Name, Boot: n.Boot, Link: n.Link})
	}
	return out
}

// BootDecisionCleared is the data of TypeBootDecisionCleared: the region no
// longer decides for this MAC (the machine was deleted, or its MAC changed).
type BootDecisionCleared struct {
	MAC       string `json:"mac"`
	MachineID string `json:"machine_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// RackID is the rack that is to forget the MAC, as BootDecision's.
	RackID string `json:"rack_id,omitempty"`
}

// BootDecisionRequest asks the region, over
// RegionRPCSubject(MethodBootDecision), for the decision of one MAC.
type BootDecisionRequest struct {
	RackID string `json:"rack_id"`
	MAC    string `json:"mac"`
}

// BootDecisionReply answers a BootDecisionRequest; Decision is nil when the
// region knows no machine with that MAC.
type BootDecisionReply struct {
	Decision *BootDecision `json:"decision"`
}

// Boot front-end protocols.
const (
	BootProtocolTFTP          = "tftp"
	BootProtocolHTTP          = "http"
	BootProtocolOffloadSocket = "offload_socket"
	BootProtocolOffloadRPC    = "offload_rpc"
)

// BootHandoff is the data of TypeBootHandoff: what one request was given.
// Route is config, versioned, root, not_found, denied or unavailable.
type BootHandoff struct {
	Protocol  string `json:"protocol"`
	Local     string `json:"local,omitempty"`
	Remote    string `json:"remote,omitempty"`
	FileName  string `json:"file_name"`
	Route     string `json:"route"`
	Path      string `json:"path,omitempty"`
	VersionID string `json:"version_id,omitempty"`
	MAC       string `json:"mac,omitempty"`
	MachineID string `json:"machine_id,omitempty"`
	Purpose   string `json:"purpose,omitempty"`
	Size      int64  `json:"size"`
	Reason    string `json:"reason,omitempty"`
	LatencyUS int64  `json:"latency_us"`
	HandoffID string `json:"handoff_id,omitempty"`
}

// BootTransfer is the data of TypeBootTransfer: how a transfer ended.
type BootTransfer struct {
	Protocol   string  `json:"protocol"`
	Local      string  `json:"local,omitempty"`
	Remote     string  `json:"remote,omitempty"`
	FileName   string  `json:"file_name"`
	Route      string  `json:"route"`
	Path       string  `json:"path,omitempty"`
	VersionID  string  `json:"version_id,omitempty"`
	MachineID  string  `json:"machine_id,omitempty"`
	Bytes      int64   `json:"bytes"`
	Size       int64   `json:"size"`
	DurationMS float64 `json:"duration_ms"`
	BlockSize  int     `json:"block_size,omitempty"`
	Error      string  `json:"error,omitempty"`
	HandoffID  string  `json:"handoff_id,omitempty"`
}

// BootRequestRejected is the data of TypeBootRequestRejected: a request a
// front-end refused before any hand-off (a malformed packet, a write
// request, a broken offload message).
type BootRequestRejected struct {
	Protocol string `json:"protocol"`
	Local    string `json:"local,omitempty"`
	Remote   string `json:"remote,omitempty"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
}

// BootRequestsSummarized is the data of TypeBootRequestsSummarized: the
// boot requests of one interval whose events the rack did not send one by
// one (their boot_handoff or boot_request_rejected, boot_transfer and
// handoff_file_deleted), because their source, or all sources together,
// were past their rate.
type BootRequestsSummarized struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Requests is how many requests were summarised; Transfers how many
	// transfers of such requests ended in the interval, TransferErrors
	// how many of those failed.
	Requests       int64 `json:"requests"`
	Transfers      int64 `json:"transfers,omitempty"`
	TransferErrors int64 `json:"transfer_errors,omitempty"`
	// Sources is how many source addresses sent them (an IPv6 /64
	// counting as one), counted up to a bound: SourcesCapped says there
	// were more.
	Sources       int64 `json:"sources"`
	SourcesCapped bool  `json:"sources_capped,omitempty"`
	// ByProtocol counts the requests by front-end (tftp, http, ...),
	// ByOutcome by hand-off route (config, versioned, root, not_found,
	// denied, unavailable) or rejection reason (malformed,
	// write_request, method, protocol), ByLimit by the limit that held
	// them back (source, total).
	ByProtocol map[string]int64 `json:"by_protocol,omitempty"`
	ByOutcome  map[string]int64 `json:"by_outcome,omitempty"`
	ByLimit    map[string]int64 `json:"by_limit,omitempty"`
	// TopSources are the sources that sent the most, most first.
	TopSources []SourceCount `json:"top_sources,omitempty"`
}

// SourceCount is how many requests came from one source: an IPv4
// address, an IPv6 /64 prefix, or "unknown".
type SourceCount struct {
	Source   string `json:"source"`
	Requests int64  `json:"requests"`
}

// Reasons a hand-off file is deleted.
const (
	HandoffDeletedDone  = "done"  // the front-end reported the transfer finished
	HandoffDeletedTTL   = "ttl"   // it outlived its time to live
	HandoffDeletedSweep = "sweep" // left over from an earlier run
	HandoffDeletedGone  = "gone"  // the front-end deleted it itself
)

// HandoffFileDeleted is the data of TypeHandoffFileDeleted.
type HandoffFileDeleted struct {
	HandoffID string    `json:"handoff_id,omitempty"`
	Path      string    `json:"path"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	AgeMS     int64     `json:"age_ms"`
}

// LocalBoot is the boot decision, for each of a machine's MACs, to boot
// from its own disk: what a machine gets once it is installed or released.
func LocalBoot(machineID, hostname, arch string, macs []string) []BootDecision {
	out := make([]BootDecision, 0, len(macs))
	for _, mac := range macs {
		out = append(out, BootDecision{MAC: mac, MachineID: machineID, Hostname: hostname, Purpose: BootPurposeLocal, Arch: arch})
	}
	return out
}
