package handoff

import (
	"strings"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/bootconfig"
)

// configName is a request for a config rendered per machine. MAC is ""
// for the generic configs (pxelinux.cfg/default, the iPXE chain script,
// the GRUB chain config).
type configName struct {
	Kind bootconfig.Kind
	MAC  string
}

// parseConfigName recognises the names boot loaders ask for their config:
// pxelinux.cfg/01-<mac> and pxelinux.cfg/default (pxelinux),
// [grub/]grub.cfg-<mac> and [grub/]grub.cfg-01-<mac> (GRUB), and the
// generic configs GRUB network images read first, [grub/]grub.cfg (amd64)
// and the Debian installer's arm64 config path (chains to the per-MAC one),
// ipxe/<mac>.ipxe and ipxe/boot.ipxe (iPXE). name is normalised.
func parseConfigName(name string) (configName, bool) {
	lower := strings.ToLower(name)
	if rest, ok := strings.CutPrefix(lower, "pxelinux.cfg/"); ok {
		if rest == "default" {
			return configName{Kind: bootconfig.KindPXELinux}, true
		}
		if m, ok := strings.CutPrefix(rest, "01-"); ok {
			return macConfig(bootconfig.KindPXELinux, m)
		}
		return configName{}, false
	}
	if strings.TrimPrefix(lower, "grub/") == "grub.cfg" || lower == debianInstallerARM64GRUBCfg {
		return configName{Kind: bootconfig.KindGRUBChain}, true
	}
	if rest, ok := strings.CutPrefix(strings.TrimPrefix(lower, "grub/"), "grub.cfg-"); ok {
		if m, ok := strings.CutPrefix(rest, "01-"); ok && len(m) == 17 {
			rest = m
		}
		return macConfig(bootconfig.KindGRUB, rest)
	}
	if rest, ok := strings.CutPrefix(lower, "ipxe/"); ok {
		if rest == "boot.ipxe" {
			return configName{Kind: bootconfig.KindIPXEChain}, true
		}
		if m, ok := strings.CutSuffix(rest, ".ipxe"); ok {
			return macConfig(bootconfig.KindIPXE, m)
		}
	}
	return configName{}, false
}

// debianInstallerARM64GRUBCfg is the config the Debian installer's arm64
// netboot GRUB (grubaa64.efi of debian-installer-12-netboot-arm64) asks
// for: grub.cfg under the prefix built into it, /debian-installer/arm64/grub.
// (Its embedded config first tests for arm64-efi/grub.cfg, a test that
// sends no request over TFTP.) It gets the chain to the per-MAC config.
const debianInstallerARM64GRUBCfg = "debian-installer/arm64/grub/grub.cfg"

func macConfig(kind bootconfig.Kind, s string) (configName, bool) {
	mac, err := events.CanonicalMAC(s)
	if err != nil {
		return configName{}, false
	}
	return configName{Kind: kind, MAC: mac}, true
}
