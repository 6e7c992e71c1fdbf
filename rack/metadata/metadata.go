package metadata

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Endpoint is the endpoint label of the service's refused requests.
const Endpoint = "metadata"

// Documents the service serves.
const (
	DocMetaData      = "meta-data"
	DocUserData      = "user-data"
	DocVendorData    = "vendor-data"
	DocNetworkConfig = "network-config"
	DocInstanceID    = "instance-id"
	DocHostname      = "hostname"
	DocPhoneHome     = "phone-home"
)

// routes maps the paths under a deployment's URL to their documents.
var routes = map[string]string{
	"meta-data":                       DocMetaData,
	"user-data":                       DocUserData,
	"vendor-data":                     DocVendorData,
	"network-config":                  DocNetworkConfig,
	"latest/meta-data/instance-id":    DocInstanceID,
	"latest/meta-data/hostname":       DocHostname,
	"latest/meta-data/local-hostname": DocHostname,
	"latest/user-data":                DocUserData,
	"phone-home":                      DocPhoneHome,
}

// Request is a parsed request path: /metadata/<machine>/<credential>/<doc>.
type Request struct {
	MachineID  string
	Credential string
	Doc        string
}

// maxCredential bounds a credential in a path (machinecred makes 43
// characters).
const maxCredential = 128

// ErrBadPath is ParsePath's error for a path the service does not serve.
var ErrBadPath = errors.New("no such path")

// ParsePath parses the path of a request to the service. The machine is
// a UUID (returned canonical), the credential one path element of URL-safe
// characters, the rest one of the documents.
func ParsePath(p string) (Request, error) {
	rest, ok := strings.CutPrefix(p, "/metadata/")
	if !ok || len(p) > 512 {
		return Request{}, ErrBadPath
	}
	machine, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return Request{}, ErrBadPath
	}
	cred, doc, ok := strings.Cut(rest, "/")
	if !ok || cred == "" || len(cred) > maxCredential || strings.ContainsFunc(cred, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) {
		return Request{}, ErrBadPath
	}
	id, err := uuid.Parse(machine)
	if err != nil || len(machine) != 36 {
		return Request{}, ErrBadPath
	}
	d, ok := routes[doc]
	if !ok {
		return Request{}, ErrBadPath
	}
	return Request{MachineID: id.String(), Credential: cred, Doc: d}, nil
}

// Config configures a Handler.
type Config struct {
	// BaseURL is the rack's HTTP server as machines reach it (the boot
	// URL): vendor-data's phone_home URL is made from it.
	BaseURL string
	// Deployment returns the decision of machineID's deployment in
	// progress on this rack (bootconfig.Cache.MetadataDeployment).
	Deployment func(machineID string) (events.BootDecision, bool)
	// Check reports whether credential is machineID's for deploymentID
	// (machinecred.Keyring.Check).
	Check func(machineID, deploymentID, credential string) bool
	// MACs returns the machine's MACs, for network-config.
	MACs func(machineID string) []string
	// UserData asks the region for the deployment's rendered preseed;
	// url is the user-data URL, credential and all. A deployment without
	// a preseed has empty user-data (ENOTFOUND).
	UserData func(ctx context.Context, machineID, deploymentID, url, remote string) (string, error)
	// PhoneHome reports the deployment's success to the region, as the
	// installer's status endpoint does; it answers the machine's status,
	// and whether the report was only queued (the region away).
	PhoneHome func(ctx context.Context, machineID, deploymentID, remote string) (status string, queued bool, err error)
	// Refused counts refused requests by endpoint and reason
	// (rackplane_machine_requests_refused_total).
	Refused *prometheus.CounterVec
	Logger  *slog.Logger
	// Timeout bounds a call on the region (default 5s).
	Timeout time.Duration
}

// Handler serves the metadata service.
type Handler struct{ cfg Config }

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.BaseURL == "" || cfg.Deployment == nil || cfg.Check == nil || cfg.MACs == nil || cfg.UserData == nil ||
		cfg.PhoneHome == nil || cfg.Refused == nil || cfg.Logger == nil {
		return nil, errors.New("metadata: BaseURL, Deployment, Check, MACs, UserData, PhoneHome, Refused and Logger are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Handler{cfg: cfg}, nil
}

// Register adds the service's routes to mux: everything under
// /metadata/, so that no path holding a credential falls through to a
// handler that records paths.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("/metadata/", h.serve)
}

// refused is the one answer of every refused credential.
const refused = "the metadata service serves only the machine of a deployment in progress, at the URL its disk image was given"

// maxPhoneHomeBody bounds a phone-home's form.
const maxPhoneHomeBody = 16 << 10

func (h *Handler) serve(w http.ResponseWriter, req *http.Request) {
	r, err := ParsePath(req.URL.EscapedPath())
	if err != nil {
		h.refuse(w, req, "bad_path", "", http.StatusNotFound, "no such path")
		return
	}
	wantMethod := http.MethodGet
	if r.Doc == DocPhoneHome {
		wantMethod = http.MethodPost
	}
	if req.Method != wantMethod && !(wantMethod == http.MethodGet && req.Method == http.MethodHead) {
		w.Header().Set("Allow", wantMethod)
		h.refuse(w, req, "method", r.MachineID, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	d, ok := h.cfg.Deployment(r.MachineID)
	switch {
	case !ok:
		h.refuse(w, req, "not_deploying", r.MachineID, http.StatusForbidden, refused)
		return
	case !h.cfg.Check(r.MachineID, d.DeploymentID, r.Credential):
		h.refuse(w, req, "wrong_credential", r.MachineID, http.StatusForbidden, refused)
		return
	}
	base := strings.TrimRight(h.cfg.BaseURL, "/") + "/metadata/" + r.MachineID + "/" + r.Credential + "/"
	log := h.cfg.Logger.With("machine_id", r.MachineID, "deployment_id", d.DeploymentID, "doc", r.Doc, "remote", req.RemoteAddr)
	var body string
	switch r.Doc {
	case DocMetaData:
		body = MetaData(d.DeploymentID, d.Hostname)
	case DocInstanceID:
		body = d.DeploymentID
	case DocHostname:
		body = d.Hostname
	case DocVendorData:
		body = VendorData(base + DocPhoneHome)
	case DocNetworkConfig:
		body = NetworkConfig(NICs(d, h.cfg.MACs(r.MachineID)))
	case DocUserData:
		ctx, cancel := context.WithTimeout(req.Context(), h.cfg.Timeout)
		defer cancel()
		body, err = h.cfg.UserData(ctx, r.MachineID, d.DeploymentID, base+DocUserData, req.RemoteAddr)
		switch code := rackplane.ErrorCode(err); {
		case err == nil:
		case code == rackplane.ENOTFOUND:
			body = "" // a deployment without a preseed
		case code == rackplane.EFORBIDDEN:
			log.Warn("user-data refused by the region", "err", err)
			h.refuse(w, req, "region_refused", r.MachineID, http.StatusForbidden, refused)
			return
		default:
			log.Warn("user-data unavailable", "err", err)
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the rack cannot reach the region for this machine's user-data; try again later", http.StatusServiceUnavailable)
			return
		}
	case DocPhoneHome:
		h.phoneHome(w, req, r, d, log)
		return
	}
	log.Info("metadata served")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, body)
}

// phoneHome takes the installed system's word that it is up: cloud-init's
// phone_home posts instance_id and hostname (among others) as a form. An
// instance_id, when given, must be the deployment's.
func (h *Handler) phoneHome(w http.ResponseWriter, req *http.Request, r Request, d events.BootDecision, log *slog.Logger) {
	b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxPhoneHomeBody))
	if err != nil {
		h.refuse(w, req, "too_large", r.MachineID, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxPhoneHomeBody))
		return
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		h.refuse(w, req, "malformed", r.MachineID, http.StatusBadRequest, "the body is not a form: "+err.Error())
		return
	}
	if id := form.Get("instance_id"); id != "" && id != d.DeploymentID {
		h.refuse(w, req, "other_instance", r.MachineID, http.StatusConflict,
			"instance_id is not this deployment's: the disk holds an earlier deployment's system")
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), h.cfg.Timeout)
	defer cancel()
	status, queued, err := h.cfg.PhoneHome(ctx, r.MachineID, d.DeploymentID, req.RemoteAddr)
	if err != nil {
		log.Warn("phone-home not taken", "err", err)
		http.Error(w, rackplane.ErrorMessage(err), httpStatus(err))
		return
	}
	log.Info("phone-home taken", "hostname", form.Get("hostname"), "status", status, "queued", queued)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if queued {
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "phone-home of machine %s accepted: the region is away; the rack will deliver it\n", r.MachineID)
		return
	}
	fmt.Fprintf(w, "machine %s is %s\n", r.MachineID, status)
}

func httpStatus(err error) int {
	switch rackplane.ErrorCode(err) {
	case rackplane.ENOTFOUND:
		return http.StatusNotFound
	case rackplane.EFORBIDDEN, rackplane.EUNAUTHORIZED:
		return http.StatusForbidden
	case rackplane.ECONFLICT:
		return http.StatusConflict
	case rackplane.EINVALID:
		return http.StatusBadRequest
	}
	return http.StatusServiceUnavailable
}

// refuse answers, counts and logs a refused request; neither the path nor
// the credential is logged.
func (h *Handler) refuse(w http.ResponseWriter, req *http.Request, reason, machineID string, status int, msg string) {
	h.cfg.Refused.WithLabelValues(Endpoint, reason).Inc()
	h.cfg.Logger.Warn("machine request refused", "endpoint", Endpoint, "reason", reason, "machine_id", machineID, "remote", req.RemoteAddr)
	http.Error(w, msg, status)
}

// MetaData is NoCloud's meta-data: the instance id (the deployment: a
// new deployment is a new instance, which cloud-init runs its first boot
// for) and the hostname. Both are plain YAML as they are (a UUID, a DNS
// label), which the simplest line-by-line reader of an installed system
// takes too; anything else is quoted.
func MetaData(instanceID, hostname string) string {
	return fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", plain(instanceID), plain(hostname))
}

// plain is s unquoted when it is made of letters, digits, '.', '-' and
// '_' alone, else quoted.
func plain(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	}) {
		return s
	}
	return yamlString(s)
}

// VendorData is a cloud-config whose phone_home module reports to url
// once the system is up, as the installed system's own init does.
func VendorData(url string) string {
	return "#cloud-config\nphone_home:\n  url: " + yamlString(url) + "\n  post: [instance_id, hostname]\n  tries: 10\n"
}

// NICs are the NICs network-config covers: the decision's, from the
// machine's inventory, and any of macs (the machine's MACs this rack has
// decisions of) the inventory lacks, such as a NIC added since the
// machine was commissioned: a network-config that leaves out the NIC
// the system reaches its rack through leaves it without network, since
// cloud-init then runs no fallback DHCP. Without an inventory, each of
// macs, all of them primary.
func NICs(d events.BootDecision, macs []string) []events.BootNIC {
	out := slices.Clone(d.NICs)
	inventory := len(out) > 0
	for _, mac := range macs {
		if !slices.ContainsFunc(out, func(n events.BootNIC) bool { return n.MAC == mac }) {
			out = append(out, events.BootNIC{MAC: mac, Boot: !inventory})
		}
	}
	return out
}

// NetworkConfig is netplan v2 (cloud-init's network config version 2):
// DHCPv4 on each NIC, matched by MAC (the installed system names its
// NICs its own way). The NIC the machine booted from comes first; the
// others are optional, so that the installed system does not wait at
// boot for a link that is not cabled, and their DHCP routes rank after
// the boot NIC's, so that the default route (and the phone-home) goes
// the way the machine reached its rack. With no NIC marked as the boot
// one, every NIC is waited for but those the inventory saw without link.
func NetworkConfig(nics []events.BootNIC) string {
	if len(nics) == 0 {
		return "version: 2\n"
	}
	anyBoot := slices.ContainsFunc(nics, func(n events.BootNIC) bool { return n.Boot })
	sorted := slices.Clone(nics)
	slices.SortStableFunc(sorted, func(a, b events.BootNIC) int {
		switch {
		case a.Boot == b.Boot:
			return 0
		case a.Boot:
			return -1
		}
		return 1
	})
	var b strings.Builder
	b.WriteString("version: 2\nethernets:\n")
	for i, n := range sorted {
		fmt.Fprintf(&b, "  nic%d:\n    match:\n      macaddress: %s\n    dhcp4: true\n", i, yamlString(n.MAC))
		if anyBoot && !n.Boot {
			b.WriteString("    dhcp4-overrides:\n      route-metric: 200\n")
		}
		if anyBoot && !n.Boot || !anyBoot && n.Link == events.LinkDown {
			b.WriteString("    optional: true\n")
		}
	}
	return b.String()
}

// yamlString quotes s as a YAML double-quoted scalar.
func yamlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
