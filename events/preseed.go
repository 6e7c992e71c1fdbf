package events

// PreseedRequest asks the region, over RegionRPCSubject(MethodPreseed),
// for the rendered preseed of a deploying machine whose installer fetched
// /preseed/<machine id> from rack RackID, or, with Prefetch, for the copy
// the rack keeps for when the region is away.
type PreseedRequest struct {
	RackID    string `json:"rack_id"`
	MachineID string `json:"machine_id"`
	Remote    string `json:"remote,omitempty"`
	// Prefetch is a rack filling its cache: no installer fetched it, and
	// the region records no preseed_served.
	Prefetch bool `json:"prefetch,omitempty"`
	// DeploymentID is the deployment whose credential the installer
	// presented to the rack: the region serves only the machine's current
	// deployment, so a credential from an earlier one is good for nothing.
	DeploymentID string `json:"deployment_id,omitempty"`
	// URL is where the installer fetches this preseed, credential and all,
	// as the rack wrote it on the kernel command line: the region renders
	// it as {{.URLs.Preseed}} (only the rack can make the credential).
	URL string `json:"url,omitempty"`
}

// PreseedReply answers a PreseedRequest: the version the machine's
// deployment pinned.
type PreseedReply struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	Content string `json:"content"`
	// StatusTokenSHA256 is the hex SHA-256 of the install status token
	// rendered into Content (absent when it has none). While the region
	// is away the rack keeps an installer's report only when its token
	// hashes to this: anyone on the boot network can reach the rack, and
	// only the machine's installer knows the token.
	StatusTokenSHA256 string `json:"status_token_sha256,omitempty"`
}

// InstallStatusRequest passes on, over RegionRPCSubject(MethodInstallStatus),
// what a deploying machine's installer POSTed to
// /status/<machine id>/<token> on rack RackID.
type InstallStatusRequest struct {
	RackID    string `json:"rack_id"`
	MachineID string `json:"machine_id"`
	Token     string `json:"token,omitempty"`
	// DeploymentID, instead of Token, is the deployment whose
	// credential the rack checked on an installed system's phone-home
	// (its metadata service): the region takes it for the machine's
	// current deployment alone, as it takes a preseed request's.
	DeploymentID string `json:"deployment_id,omitempty"`
	Result       string `json:"result"`
	Message      string `json:"message,omitempty"`
	Remote       string `json:"remote,omitempty"`
}

// InstallStatusReply answers an InstallStatusRequest: the machine's status
// after the report; Changed is false for a report taken before.
type InstallStatusReply struct {
	MachineID string `json:"machine_id"`
	Status    string `json:"status"`
	Changed   bool   `json:"changed"`
}
