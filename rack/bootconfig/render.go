package bootconfig

import (
	"bytes"
	"fmt"
	"net/url"
	"path"
	"strings"
	"text/template"

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
	// Enlist is what a machine the region does not know boots; its MAC is
	// filled in per request. Nil means unknown machines boot locally.
	Enlist *events.BootDecision
}

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
	case events.BootPurposeEnlist, events.BootPurposeInstall, events.BootPurposeCommission, events.BootPurposeRescue:
		if d.Kernel == "" || d.Initrd == "" {
			return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: purpose %s needs a kernel and an initrd", mac, d.Purpose)
		}
	default:
		return rackplane.Errorf(rackplane.EINVALID, "boot decision for %s: purpose %q is not local, enlist, install, commission or rescue", mac, d.Purpose)
	}
	for name, v := range map[string]string{"kernel": d.Kernel, "initrd": d.Initrd, "preseed_url": d.PreseedURL, "boot_file": d.BootFile, "deployment_id": d.DeploymentID} {
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
	}{
		BootDecision:   d,
		CmdLine:        r.cmdline(d),
		GRUBCmdLine:    r.grubCmdline(d),
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
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render %s for %s: %w", kind, d.MAC, err)
	}
	return b.Bytes(), nil
}

func (r *Renderer) cmdline(d events.BootDecision) string {
	return strings.Join(r.params(d), " ")
}

func (r *Renderer) params(d events.BootDecision) []string {
	parts := append([]string(nil), d.Params...)
	if d.PreseedURL != "" {
		parts = append(parts, r.cfg.PreseedParam+"="+PreseedURL(d, r.cfg.Credential))
	}
	return parts
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
func (r *Renderer) grubCmdline(d events.BootDecision) string {
	parts := r.params(d)
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
exit
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
