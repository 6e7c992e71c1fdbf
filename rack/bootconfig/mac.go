package bootconfig

import (
	"fmt"
	"strings"
)

// NormalizeMAC returns mac in the canonical form aa:bb:cc:dd:ee:ff. It
// accepts colons, hyphens or no separator, in either case, as boot loaders
// spell MACs every way.
func NormalizeMAC(mac string) (string, error) {
	var hex []byte
	sep := byte(0)
	for i := 0; i < len(mac); i++ {
		c := mac[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			hex = append(hex, c)
		case c >= 'A' && c <= 'F':
			hex = append(hex, c+('a'-'A'))
		case c == ':' || c == '-':
			// Separators only between octets, and one kind throughout.
			if len(hex)%2 != 0 || len(hex) == 0 || (sep != 0 && sep != c) {
				return "", fmt.Errorf("malformed MAC %q", mac)
			}
			sep = c
		default:
			return "", fmt.Errorf("malformed MAC %q", mac)
		}
		if len(hex) > 12 {
			return "", fmt.Errorf("malformed MAC %q", mac)
		}
	}
	if len(hex) != 12 {
		return "", fmt.Errorf("malformed MAC %q", mac)
	}
	if sep != 0 && strings.Count(mac, string(sep)) != 5 {
		return "", fmt.Errorf("malformed MAC %q", mac)
	}
	var b strings.Builder
	for i := 0; i < 12; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.Write(hex[i : i+2])
	}
	return b.String(), nil
}

// Hyphenated returns a canonical MAC as aa-bb-cc-dd-ee-ff, the form of
// pxelinux and GRUB config names.
func Hyphenated(mac string) string { return strings.ReplaceAll(mac, ":", "-") }
