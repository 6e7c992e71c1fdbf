package capabilities

import (
	"regexp"
	"strings"
)

// OSInfo describes an operating system the rack knows how to boot.
type OSInfo struct {
	Title    string
	Releases map[string]ReleaseInfo
	// KeyPattern, when set, is what a licence key of this OS looks like.
	KeyPattern *regexp.Regexp
}

// ReleaseInfo describes one release.
type ReleaseInfo struct {
	Title              string
	Default            bool
	RequiresLicenceKey bool
	CanCommission      bool
}

// Catalog maps OS names to what the rack knows of them.
type Catalog map[string]OSInfo

var productKey = regexp.MustCompile(`^[A-Z0-9]{5}(-[A-Z0-9]{5}){4}$`)

// DefaultCatalog knows the operating systems a rack commonly boots.
func DefaultCatalog() Catalog {
	return Catalog{
		"ubuntu": {Title: "Ubuntu", Releases: map[string]ReleaseInfo{
			"focal": {Title: "Ubuntu 20.04 LTS", CanCommission: true},
			"jammy": {Title: "Ubuntu 22.04 LTS", CanCommission: true},
			"noble": {Title: "Ubuntu 24.04 LTS", Default: true, CanCommission: true},
		}},
		"debian": {Title: "Debian", Releases: map[string]ReleaseInfo{
			"bookworm": {Title: "Debian 12", Default: true},
			"trixie":   {Title: "Debian 13"},
		}},
		"centos": {Title: "CentOS Stream", Releases: map[string]ReleaseInfo{
			"centos9": {Title: "CentOS Stream 9", Default: true},
		}},
		"windows": {Title: "Windows Server", KeyPattern: productKey, Releases: map[string]ReleaseInfo{
			"win2019": {Title: "Windows Server 2019", RequiresLicenceKey: true},
			"win2022": {Title: "Windows Server 2022", Default: true, RequiresLicenceKey: true},
		}},
		"esxi": {Title: "VMware ESXi", KeyPattern: productKey, Releases: map[string]ReleaseInfo{
			"8.0": {Title: "VMware ESXi 8.0", Default: true, RequiresLicenceKey: true},
		}},
	}
}

// os returns what the catalog knows of name, or a plain description of an
// OS it does not know: images of any OS can be booted.
func (c Catalog) os(name string) OSInfo {
	if info, ok := c[name]; ok {
		return info
	}
	return OSInfo{Title: name}
}

func (i OSInfo) release(name string) ReleaseInfo {
	if r, ok := i.Releases[name]; ok {
		return r
	}
	return ReleaseInfo{Title: strings.TrimSpace(i.Title + " " + name)}
}
