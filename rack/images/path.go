package images

import (
	"strings"

	"github.com/rackplane/rackplane"
)

// Kinds of version.
const (
	KindImage      = "image"
	KindBootloader = "bootloader"
)

// bootloaderRoot is the first path component of every bootloader version,
// and therefore not a valid os name.
const bootloaderRoot = "bootloaders"

const (
	maxSegment  = 64
	maxFileName = 128
	maxID       = 200
)

func validComponent(s string, max int) bool {
	if s == "" || len(s) > max || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '+' && c != '~' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func validSegment(s string) bool  { return validComponent(s, maxSegment) }
func validFileName(s string) bool { return validComponent(s, maxFileName) }

// ParsePath splits a versioned file path into its version id and file
// name. It accepts only the exact forms documented in the package comment
// (one leading slash is tolerated), so a path from a TFTP client can never
// name anything outside the store.
func ParsePath(p string) (versionID, name string, err error) {
	p = strings.TrimPrefix(p, "/")
	if len(p) > maxID+1+maxFileName {
		return "", "", rackplane.Errorf(rackplane.EINVALID, "path %q is too long", truncate(p))
	}
	// Cut, not split, as it allocates nothing: this runs on every boot
	// request for an image's file.
	first, _, _ := strings.Cut(p, "/")
	want := 7
	if first == bootloaderRoot {
		want = 5
	}
	if strings.Count(p, "/")+1 != want {
		return "", "", rackplane.Errorf(rackplane.EINVALID,
			"path %q is not <os>/<arch>/<subarch>/<release>/<label>/<version>/<file> or bootloaders/<bootloader>/<arch>/<version>/<file>", truncate(p))
	}
	i := strings.LastIndexByte(p, '/')
	versionID, name = p[:i], p[i+1:]
	for rest, more := versionID, true; more; {
		var s string
		s, rest, more = strings.Cut(rest, "/")
		if !validSegment(s) {
			return "", "", rackplane.Errorf(rackplane.EINVALID, "path %q has an invalid component", truncate(p))
		}
	}
	if !validFileName(name) {
		return "", "", rackplane.Errorf(rackplane.EINVALID, "path %q has an invalid file name", truncate(p))
	}
	if len(versionID) > maxID {
		return "", "", rackplane.Errorf(rackplane.EINVALID, "path %q is too long", truncate(p))
	}
	return versionID, name, nil
}

// truncate keeps hostile input from bloating messages and logs.
func truncate(s string) string {
	if len(s) > 256 {
		return s[:256] + "…"
	}
	return s
}

// compareVersions orders version strings naturally: runs of digits compare
// as numbers, so 9 < 10 and 20261101 < 20261102.1.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		da, db := isDigit(a[0]), isDigit(b[0])
		if da && db {
			na, ra := digitRun(a)
			nb, rb := digitRun(b)
			na = strings.TrimLeft(na, "0")
			nb = strings.TrimLeft(nb, "0")
			if len(na) != len(nb) {
				return cmpInt(len(na), len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return cmpInt(int(a[0]), int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return cmpInt(len(a), len(b))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func digitRun(s string) (run, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
