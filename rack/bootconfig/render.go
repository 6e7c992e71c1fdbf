package bootconfig

import (
	"bytes"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Kind is a boot loader config format.
type Kind string

// Config kinds.
const (
	KindPXELinux Kind = "pxelinux"
	KindGRUB     Kind = "grub"
	KindIPXE     Kind = "ipxe"
	// KindIPXEChain is the generic iPXE script that chains to the
	// per-MAC one, for a DHCP server that cannot hand out per-MAC names.
	KindIPXEChain Kind = "ipxe_chain"
)

// RenderConfig configures a Renderer.
type RenderConfig struct {
	// HTTPBootURL is where machines reach this rack's HTTP boot server,
	// such as http://10.0.2.2:5248. When set, iPXE scripts fetch kernel and
	// initrd over HTTP, and GRUB configs try HTTP first (GRUB's http module
	// must be loadable: Debian's signed network image lacks it, and under
	// Secure Boot GRUB loads no module, so GRUB falls back to TFTP); when
	// empty, over the protocol that served the config.
	HTTPBootURL string
	// PreseedParam is the kernel parameter that carries the preseed URL
	// (default "url", the Debian installer's alias of preseed/url).
	PreseedParam string
	// Credential makes the per-deployment credential of a machine (see
	// package machinecred): appended as a last path element to an
	// install decision's preseed URL, it is what the installer shows the
	// rack to get its preseed. Nil leaves the URL as the region made it.
	Credential func(machineID, deploymentID string) string
	// AgentURL is where the ephemeral agent reaches this rack's HTTP
	// server (its boot URL, whether or not boot files go over HTTP);
	// an ubuntu-autoinstall deployment's NoCloud seed is there too
	// (MetadataURL).
	// With Credential, a decision whose purpose runs the agent
	// (RunsAgent) gets rackplane.agent=<AgentURL>/agent/<machine>/<credential>
	// on its command line. Empty: none.
	AgentURL string
	// Enlist is what a machine the region does not know boots; its MAC is
	// filled in per request. Nil means unknown machines boot locally.
	Enlist *events.BootDecision
}

// UnknownStep is how often iPXE on an unknown machine that is to wait
// asks again for its config (RenderUnknown).
const UnknownStep = 5 * time.Second

// Renderer renders configs from boot decisions.
type Renderer struct {
	cfg RenderConfig
}

// NewRenderer validates cfg and returns a renderer.
func NewRenderer(cfg RenderConfig) (*Renderer, error) {
	if cfg.PreseedParam == "" {
		cfg.PreseedParam = "url"
	}
	if strings.ContainsAny(cfg.PreseedParam, " \t\r\n=") {
		return nil, rackplane.Errorf(rackplane.EINVALID, "bootconfig: PreseedParam %q must be a bare parameter name", cfg.PreseedParam)
	}
	cfg.HTTPBootURL = strings.TrimRight(cfg.HTTPBootURL, "/")
	cfg.AgentURL = strings.TrimRight(cfg.AgentURL, "/")
	if strings.ContainsFunc(cfg.AgentURL, isSpaceOrControl) {
		return nil, rackplane.Errorf(rackplane.EINVALID, "bootconfig: AgentURL %q must not contain spaces", cfg.AgentURL)
	}
	if strings.ContainsAny(cfg.HTTPBootURL, " \t\r\n") {
		return nil, rackplane.Errorf(rackplane.EINVALID, "bootconfig: HTTPBootURL %q must not contain spaces", cfg.HTTPBootURL)
	}
	if cfg.Enlist != nil {
		e := *cfg.Enlist
		e.MAC = "00:00:00:00:00:00"
		if err := ValidateDecision(&e); err != nil {
			return nil, fmt.Errorf("bootconfig: enlist decision: %w", err)
		}
		if e.Purpose == events.BootPurposeInstall {
			return nil, rackplane.Errorf(rackplane.EINVALID, "bootconfig: the enlist decision must have purpose enlist or local")
		}
	}
	return &Renderer{cfg: cfg}, nil
}

// Unknown is the decision for a machine the region does not know.
func (r *Renderer) Unknown(mac string) events.BootDecision {
	if r.cfg.Enlist == nil {
		return events.BootDecision{MAC: mac, Purpose: events.BootPurposeLocal}
	}
	d := *r.cfg.Enlist
	d.MAC = mac
	d.Params = append([]string(nil), d.Params...)
	return d
}

// ValidateDecision checks a decision from outside and puts its MAC in
// canonical form. Values end up in configs a boot loader parses line by
// line, so nothing may carry a line break or, where a value is one word,
// a space: a decision must not be able to smuggle in config lines.
func ValidateDecision(d *events.BootDecision) error {
	mac, err := events.CanonicalMAC(d.MAC)
	if err != nil {
		return rackplane.Errorf(rackplane.EINVALID, "boot decision: %v", err)
	}
	d.MAC = mac
	switch d.Purpose {
	case events.BootPurposeLocal:
	case events.BootPurposeEnlist, events.BootPurposeInstall, events.BootPurposeCommission, events.BootPurposeRescue,
		events.BootPurposeErase, events.BootPurposeDeploy:
		if d.Kernel == "" || d.Initrd == "" {
			return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: purpose %s needs a kernel and an initrd", mac, d.Purpose)
		}
	default:
		return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: purpose %q is not local, enlist, install, commission, rescue, erase or deploy", mac, d.Purpose)
	}
	if d.Purpose == events.BootPurposeDeploy && (d.DiskImage == "" || d.TargetDisk == "" || d.DeploymentID == "") {
		return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: purpose deploy needs a disk image, a target disk and a deployment", mac)
	}
	for name, v := range map[string]string{"kernel": d.Kernel, "initrd": d.Initrd, "preseed_url": d.PreseedURL, "boot_file": d.BootFile,
		"deployment_id": d.DeploymentID, "installer": d.Installer, "disk_image": d.DiskImage, "target_disk": d.TargetDisk} {
		if strings.ContainsFunc(v, isSpaceOrControl) {
			return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: %s contains a space or control character", mac, name)
		}
	}
	for name, v := range map[string]string{"hostname": d.Hostname, "machine_id": d.MachineID, "arch": d.Arch, "image_version": d.ImageVer} {
		if strings.ContainsFunc(v, isControl) {
			return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: %s contains a control character", mac, name)
		}
	}
	for _, p := range d.Params {
		if strings.ContainsFunc(p, isControl) {
			return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: a kernel parameter contains a control character", mac)
		}
	}
	return nil
}

func isControl(r rune) bool        { return r < 0x20 || r == 0x7f }
func isSpaceOrControl(r rune) bool { return r == ' ' || isControl(r) }

// Render renders the config of kind for decision d, which must have passed
// ValidateDecision.
func (r *Renderer) Render(kind Kind, d events.BootDecision) ([]byte, error) {
	return r.render(kind, d, false)
}

// RenderUnknown renders the config of kind for a machine the region does
// not know (Unknown). With wait, iPXE's config asks again for it after
// UnknownStep rather than booting locally: the region makes a machine of
// a MAC as it asks, and may decide its boot within moments. Other
// loaders cannot ask again; their configs are Unknown's either way.
func (r *Renderer) RenderUnknown(kind Kind, mac string, wait bool) (events.BootDecision, []byte, error) {
	d := r.Unknown(mac)
	b, err := r.render(kind, d, wait && d.Purpose == events.BootPurposeLocal)
	return d, b, err
}

func (r *Renderer) render(kind Kind, d events.BootDecision, wait bool) ([]byte, error) {
	t, ok := templates[kind]
	if !ok {
		return nil, fmt.Errorf("render: unknown config kind %q", kind)
	}
	data := struct {
		events.BootDecision
		CmdLine        string
		GRUBCmdLine    string
		GRUBKernel     string
		GRUBInitrd     string
		GRUBKernelHTTP string
		GRUBInitrdHTTP string
		KernelURL      string
		InitrdURL      string
		InitrdName     string
		Hyphenated     string
		WaitStep       int
	}{
		BootDecision:   d,
		CmdLine:        r.cmdline(kind, d),
		GRUBCmdLine:    r.grubCmdline(kind, d),
		GRUBKernel:     grubQuote("/" + strings.TrimLeft(d.Kernel, "/")),
		GRUBInitrd:     grubQuote("/" + strings.TrimLeft(d.Initrd, "/")),
		GRUBKernelHTTP: r.grubHTTPFile(d.Kernel),
		GRUBInitrdHTTP: r.grubHTTPFile(d.Initrd),
		KernelURL:      r.url(d.Kernel),
		InitrdURL:      r.url(d.Initrd),
		// iPXE names a fetched image after its URL's last element; under
		// UEFI the kernel's EFI stub finds the initrd by initrd=<name> on
		// its command line (iPXE builds without the LoadFile2 initrd
		// protocol, such as Debian 12's, pass it no other way).
		InitrdName: path.Base(d.Initrd),
		Hyphenated: Hyphenated(d.MAC),
	}
	if wait {
		data.WaitStep = int(UnknownStep / time.Second)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s for %s: %w", kind, d.MAC, err)
	}
	return b.Bytes(), nil
}

func (r *Renderer) cmdline(kind Kind, d events.BootDecision) string {
	return strings.Join(r.params(kind, d), " ")
}

// params is the kernel command line of d in a config of kind: an
// installer family's parameters, then the decision's (the machine's,
// then the operator's: the kernel hands duplicates to the installer in
// order, and installers take the last), or, without a family, the
// decision's then url=<preseed>, as before families.
func (r *Renderer) params(kind Kind, d events.BootDecision) []string {
	if family, ok := r.familyParams(kind, d); ok {
		return append(family, d.Params...)
	}
	parts := append([]string(nil), d.Params...)
	if d.PreseedURL != "" {
		parts = append(parts, r.cfg.PreseedParam+"="+PreseedURL(d, r.cfg.Credential))
	}
	if u := AgentURL(d, r.cfg.AgentURL, r.cfg.Credential); u != "" {
		// The agent's environment is ours: its kernel talks on the
		// serial console too (what an operator watching a stuck
		// commissioning sees), and it is told the NIC it booted from,
		// which the inventory marks and the environment brings up.
		parts = append(parts, AgentParam+"="+u, "rackplane.mac="+d.MAC)
		if !slices.ContainsFunc(parts, func(p string) bool { return strings.HasPrefix(p, "console=") }) {
			parts = append(parts, "console=tty0", "console=ttyS0,115200n8")
		}
	}
	return parts
}

// AgentParam is the kernel parameter that tells the ephemeral agent
// where to report (cmd/rackplane-agent run).
const AgentParam = "rackplane.agent"

// RunsAgent reports whether a boot of purpose runs the ephemeral agent,
// which reports to the rack: commissioning, erasing and writing a disk
// image do; a rescue boot is an operator's.
func RunsAgent(purpose string) bool {
	return purpose == events.BootPurposeCommission || purpose == events.BootPurposeErase || purpose == events.BootPurposeDeploy
}

// AgentURL is the URL the agent of decision d reports under, base (the
// rack's HTTP server)/agent/<machine>/<credential of the operation>, or
// "" when d runs no agent or lacks what the credential is made from.
func AgentURL(d events.BootDecision, base string, credential func(machineID, deploymentID string) string) string {
	if !RunsAgent(d.Purpose) || base == "" || credential == nil || d.MachineID == "" || d.DeploymentID == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/agent/" + d.MachineID + "/" + credential(d.MachineID, d.DeploymentID)
}

// PreseedURL is the preseed URL of decision d as it goes on the kernel
// command line: the region's, with the machine's credential for the
// deployment (made by credential, nil for none) as its last element.
func PreseedURL(d events.BootDecision, credential func(machineID, deploymentID string) string) string {
	if d.PreseedURL == "" || credential == nil || d.MachineID == "" || d.DeploymentID == "" {
		return d.PreseedURL
	}
	return strings.TrimRight(d.PreseedURL, "/") + "/" + credential(d.MachineID, d.DeploymentID)
}

// grubCmdline quotes every parameter for GRUB's script parser, which
// would otherwise act on ;, $, |, & and quotes in a value (a parameter
// must not be able to add GRUB commands). GRUB drops the quotes, so the
// kernel sees the parameters as they were.
func (r *Renderer) grubCmdline(kind Kind, d events.BootDecision) string {
	parts := r.params(kind, d)
	for i, p := range parts {
		parts[i] = grubQuote(p)
	}
	return strings.Join(parts, " ")
}

// grubQuote makes s one word of GRUB's script: single-quoted, a single
// quote written as '\”.
func grubQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// grubHTTPFile is a store path on the rack's HTTP server as GRUB names
// it, quoted, or "" without an HTTP server GRUB can reach.
func (r *Renderer) grubHTTPFile(p string) string {
	dev := grubHTTP(r.cfg.HTTPBootURL)
	if dev == "" {
		return ""
	}
	return grubQuote(dev + "/" + strings.TrimLeft(p, "/"))
}

// grubHTTP is GRUB's device for the rack's HTTP boot server,
// (http,host:port) followed by the URL's path, or "" when GRUB cannot
// reach it that way (no URL, https: GRUB has no TLS, a URL with parts
// GRUB's device syntax cannot carry).
func grubHTTP(bootURL string) string {
	u, err := url.Parse(bootURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" ||
		strings.ContainsAny(u.Host, "(),") {
		return ""
	}
	return "(http," + u.Host + ")" + strings.TrimRight(u.Path, "/")
}

// url makes a store path absolute for iPXE: over HTTP when the rack has an
// HTTP boot URL, else relative to the server that served the script.
func (r *Renderer) url(path string) string {
	path = "/" + strings.TrimLeft(path, "/")
	return r.cfg.HTTPBootURL + path
}

var templates = map[Kind]*template.Template{
	KindPXELinux: template.Must(template.New("pxelinux").Parse(`# {{.Purpose}} {{.MAC}}{{if .MachineID}} machine {{.MachineID}}{{end}}
{{- if eq .Purpose "local"}}
DEFAULT local
LABEL local
  LOCALBOOT 0
{{- else}}
DEFAULT {{.Purpose}}
LABEL {{.Purpose}}
  KERNEL {{.Kernel}}
  INITRD {{.Initrd}}
  APPEND {{.CmdLine}}
  IPAPPEND 2
{{- end}}
`)),
	// GRUB tries the rack's HTTP server first (kernels over TFTP take
	// minutes) and falls back to TFTP, the server GRUB was loaded from,
	// when its http module cannot be loaded or the fetch fails.
	KindGRUB: template.Must(template.New("grub").Parse(`# {{.Purpose}} {{.MAC}}{{if .MachineID}} machine {{.MachineID}}{{end}}
set default=0
set timeout=0
{{- if eq .Purpose "local"}}
menuentry 'local' {
  exit
}
{{- else}}
menuentry '{{.Purpose}}' {
{{- if .GRUBKernelHTTP}}
  set rackplane_loaded=
  if insmod http; then
    if linux {{.GRUBKernelHTTP}} {{.GRUBCmdLine}}; then
      if initrd {{.GRUBInitrdHTTP}}; then
        set rackplane_loaded=http
      fi
    fi
  fi
  if [ -z "$rackplane_loaded" ]; then
    linux {{.GRUBKernel}} {{.GRUBCmdLine}}
    initrd {{.GRUBInitrd}}
  fi
{{- else}}
  linux {{.GRUBKernel}} {{.GRUBCmdLine}}
  initrd {{.GRUBInitrd}}
{{- end}}
}
{{- end}}
`)),
	KindIPXE: template.Must(template.New("ipxe").Parse(`#!ipxe
# {{.Purpose}} {{.MAC}}{{if .MachineID}} machine {{.MachineID}}{{end}}
{{- if eq .Purpose "local"}}
{{- if .WaitStep}}
# Unknown to the region, which makes a machine of the MAC as it asks and
# may decide its boot within moments: ask again (the rack says when to
# stop) rather than boot locally at once.
echo Rackplane: this machine is not known to the region yet, asking again in {{.WaitStep}}s
sleep {{.WaitStep}}
chain /ipxe/${mac:hexhyp}.ipxe ||
{{- end}}
# A failure, not a success: UEFI firmware that a boot option returned
# success to stops there (in its setup menu) rather than try the next
# one, the disk; BIOS tries the next device either way.
exit 1
{{- else}}
kernel {{.KernelURL}} {{.CmdLine}} initrd={{.InitrdName}}
initrd {{.InitrdURL}}
boot
{{- end}}
`)),
	KindIPXEChain: template.Must(template.New("ipxe_chain").Parse(`#!ipxe
chain /ipxe/${mac:hexhyp}.ipxe
`)),
}
