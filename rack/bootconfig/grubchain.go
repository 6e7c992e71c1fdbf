package bootconfig

import "text/template"

// KindGRUBChain is the generic GRUB config that loads the per-MAC one
// (grub/grub.cfg-<mac>), for GRUB images that look for their config at a
// path built into them rather than by MAC: Debian's signed amd64 network
// image (grubnetx64.efi, prefix /grub) reads only grub/grub.cfg, the
// Debian installer's arm64 netboot GRUB debian-installer/arm64/grub/grub.cfg.
// GRUB knows the MAC it booted from as net_default_mac, in the colon form
// the hand-off parses. Without it (GRUB found no network interface) or
// when that config fails, GRUB exits to the firmware, which boots the
// next device, rather than stop at a grub> prompt.
const KindGRUBChain Kind = "grub_chain"

// The template is registered here rather than in render.go's table so
// that the chain stays one self-contained piece.
func init() {
	templates[KindGRUBChain] = template.Must(template.New("grub_chain").Parse(`# chain to this machine's own config
set timeout=0
if [ -n "$net_default_mac" ]; then
  configfile /grub/grub.cfg-${net_default_mac}
fi
exit
`))
}
