package events

import "fmt"

// CanonicalMAC returns mac in the one form a MAC address takes on the wire,
// in the region's database and in a rack's cache: six lower-case hex
// octets separated by colons, aa:bb:cc:dd:ee:ff. The schemas' MAC patterns
// accept that form only.
//
// It accepts the spellings operators, firmware and boot loaders use, in
// either case:
//
//	52:54:00:12:34:56   six octets, colons (Linux, the region's API)
//	52-54-00-12-34-56   six octets, hyphens (pxelinux.cfg/01-…, grub.cfg-…)
//	5254.0012.3456      three groups of four, dots (switches)
//	525400123456        twelve digits, no separator (iPXE ${mac:hexraw})
//
// and nothing else: one kind of separator throughout, every octet two
// digits, no surrounding space. Only 48-bit addresses are machines' boot
// MACs; EUI-64 and 20-byte InfiniBand addresses, which net.ParseMAC also
// reads, are refused.
func CanonicalMAC(mac string) (string, error) {
	// The length alone tells the form: digits per group and separator.
	var group int
	var sep byte
	switch len(mac) {
	case 12:
		group = 12
	case 14:
		group, sep = 4, '.'
	case 17:
		group, sep = 2, mac[2]
		if sep != ':' && sep != '-' {
			return "", badMAC(mac)
		}
	default:
		return "", badMAC(mac)
	}
	var digits [12]byte
	n := 0
	for i := 0; i < len(mac); i++ {
		c := mac[i]
		if (i+1)%(group+1) == 0 {
			if c != sep {
				return "", badMAC(mac)
			}
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return "", badMAC(mac)
		}
		digits[n] = c
		n++
	}
	out := make([]byte, 0, 17)
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, digits[i], digits[i+1])
	}
	return string(out), nil
}

func badMAC(mac string) error {
	return fmt.Errorf("%.40q is not a MAC address such as 52:54:00:12:34:56", mac)
}
