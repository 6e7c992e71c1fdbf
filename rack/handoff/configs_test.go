package handoff

import (
	"testing"

	"github.com/rackplane/rackplane/rack/bootconfig"
)

func TestParseConfigName(t *testing.T) {
	const mac = "52:54:00:12:34:56"
	tests := []struct {
		name string
		want configName
		ok   bool
	}{
		{"pxelinux.cfg/01-52-54-00-12-34-56", configName{bootconfig.KindPXELinux, mac}, true},
		{"pxelinux.cfg/default", configName{bootconfig.KindPXELinux, ""}, true},
		{"pxelinux.cfg/C0A80001", configName{}, false},
		// Debian's grubnetx64.efi reads $prefix/grub.cfg, prefix /grub.
		{"grub/grub.cfg", configName{bootconfig.KindGRUBChain, ""}, true},
		{"grub.cfg", configName{bootconfig.KindGRUBChain, ""}, true},
		{"GRUB/GRUB.CFG", configName{bootconfig.KindGRUBChain, ""}, true},
		// What the chain config asks for: $net_default_mac has colons.
		{"grub/grub.cfg-52:54:00:12:34:56", configName{bootconfig.KindGRUB, mac}, true},
		{"grub/grub.cfg-01-52-54-00-12-34-56", configName{bootconfig.KindGRUB, mac}, true},
		{"grub.cfg-52-54-00-12-34-56", configName{bootconfig.KindGRUB, mac}, true},
		{"grub/grub.cfg-", configName{}, false},
		{"grub/grub.cfg-nope", configName{}, false},
		{"grub/x86_64-efi/grub.cfg", configName{}, false}, // tested with -e first; not found sends GRUB to grub/grub.cfg
		{"boot/grub/grub.cfg", configName{}, false},
		{"debian-installer/arm64/grub/grub.cfg", configName{bootconfig.KindGRUBChain, ""}, true},
		{"ipxe/52-54-00-12-34-56.ipxe", configName{bootconfig.KindIPXE, mac}, true},
		{"ipxe/boot.ipxe", configName{bootconfig.KindIPXEChain, ""}, true},
		{"ipxe/boot", configName{}, false},
		{"pxelinux.0", configName{}, false},
	}
	for _, tt := range tests {
		got, ok := parseConfigName(tt.name)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseConfigName(%q) = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
