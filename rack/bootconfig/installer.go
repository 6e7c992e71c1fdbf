package bootconfig

import (
	"strings"

	"github.com/rackplane/rackplane/events"
)

// Debian-installer defaults that no preseed can give in time: the
// language and keyboard questions come before the network, so before the
// preseed is fetched. auto=true defers them until after, and at
// priority=critical d-i takes these answers rather than ask; an operator's
// kernel parameter (after these) or the preseed overrides them.
const (
	DebianLocale = "en_US.UTF-8"
	DebianKeymap = "us"
)

// familyParams are the kernel parameters an install decision's installer
// family needs before the decision's own (the machine's, then the
// operator's, which override them), and whether the family takes over
// the preseed URL from the custom url= form. A family that does not
// (custom, agent, none or one this rack does not know) boots as every
// image did before families.
//
// BOOTIF=01-<mac>, which pxelinux appends itself (IPAPPEND 2) and GRUB
// and iPXE configs get here, names the NIC the machine booted from to
// the installer's initramfs.
//
//   - debian-installer (Debian 12's, run by internal/e2e) reads url=
//     (preseed/url), auto= and priority= from its environment
//     (env2debconf, /etc/preseed_aliases). Given
//     netcfg/choose_interface=<mac>, netcfg configures the NIC of that
//     MAC; unset, on a machine with more than one NIC, it asks which at
//     critical priority. A URL in the boot file field of its DHCP lease
//     it loads as a preseed before url= (network-preseed's
//     dhcp_preseed_url): the rack's DHCP server gives a boot file to PXE
//     and HTTP boot clients only, never to d-i's own client (vendor
//     class "d-i"). netcfg asks for name servers at critical priority
//     when DHCP gives none, so a subnet d-i installs on needs DNS
//     servers in its DHCP replies.
//   - subiquity reads autoinstall and the NoCloud seed of ds= (its
//     user-data is the preseed, from the rack's metadata service), and
//     needs the network up in its initramfs: ip=dhcp.
//   - anaconda reads the kickstart of inst.ks= with the network up:
//     ip=dhcp.
func (r *Renderer) familyParams(kind Kind, d events.BootDecision) ([]string, bool) {
	if d.Purpose != events.BootPurposeInstall {
		return nil, false
	}
	var parts []string
	switch d.Installer {
	case events.InstallerDebian:
		parts = []string{"auto=true", "priority=critical", "locale=" + DebianLocale, "keymap=" + DebianKeymap}
		if h := d.Hostname; isHostname(h) {
			// hostname= is also the kernel's own parameter (Linux 6.0 and
			// later); d-i takes it back from the kernel. netcfg/get_hostname
			// is what netcfg asks, and d-i would not ask it at critical.
			parts = append(parts, "hostname="+h, "netcfg/get_hostname="+h)
		}
		// With more than one NIC netcfg asks which, even at critical
		// priority, unless told: it takes a MAC address for the NIC of
		// that address, the one the machine booted from.
		parts = append(parts, "netcfg/choose_interface="+d.MAC)
		if d.PreseedURL != "" {
			parts = append(parts, "url="+PreseedURL(d, r.cfg.Credential))
		}
	case events.InstallerAutoinstall:
		parts = []string{"autoinstall"}
		if u := MetadataURL(d, r.cfg.AgentURL, r.cfg.Credential); u != "" {
			parts = append(parts, "ds=nocloud-net;s="+u)
		}
		parts = append(parts, "ip=dhcp")
	case events.InstallerAnaconda:
		if d.PreseedURL != "" {
			parts = append(parts, "inst.ks="+PreseedURL(d, r.cfg.Credential))
		}
		parts = append(parts, "ip=dhcp")
	default:
		return nil, false
	}
	if kind != KindPXELinux {
		// pxelinux's IPAPPEND 2 adds it; GRUB and iPXE do not.
		parts = append(parts, "BOOTIF=01-"+Hyphenated(d.MAC))
	}
	return parts, true
}

// MetadataURL is the URL of the rack's metadata service (NoCloud seed) for
// deployment d: base (the rack's HTTP server)/metadata/<machine>/<credential
// of the deployment>/, with the trailing slash NoCloud appends user-data
// and meta-data to. "" when d lacks what the credential is made from.
func MetadataURL(d events.BootDecision, base string, credential func(machineID, deploymentID string) string) string {
	if base == "" || credential == nil || d.MachineID == "" || d.DeploymentID == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/metadata/" + d.MachineID + "/" + credential(d.MachineID, d.DeploymentID) + "/"
}

// isHostname reports whether h can go on a kernel command line as a
// host name: letters, digits, hyphens and dots only, so it is one word
// no loader or installer reads otherwise.
func isHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}
