package bootconfig

import "strings"

// Hyphenated returns a canonical MAC as aa-bb-cc-dd-ee-ff, the form of
// pxelinux and GRUB config names.
func Hyphenated(mac string) string { return strings.ReplaceAll(mac, ":", "-") }
