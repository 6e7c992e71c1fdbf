package handoff

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxNameLen bounds a requested name. Boot file names are short; a long
// one is an attack or a mistake.
const MaxNameLen = 512

// Errors of Normalize; the resolver reports them as route "denied".
var (
	ErrEmptyName   = errors.New("empty file name")
	ErrNameTooLong = errors.New("file name too long")
	ErrNameNUL     = errors.New("file name contains NUL")
	ErrNameControl = errors.New("file name contains a control character")
	ErrNameUTF8    = errors.New("file name is not UTF-8")
	ErrNameParent  = errors.New("file name refers to a parent directory")
)

// Normalize turns a requested name into a clean relative slash path:
// backslashes become slashes (Windows-born boot loaders send them),
// leading slashes and "." elements go, and ".." anywhere is refused rather
// than resolved, because no legitimate boot loader asks for it.
func Normalize(name string) (string, error) {
	if len(name) > MaxNameLen {
		return "", ErrNameTooLong
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", ErrNameNUL
	}
	if !utf8.ValidString(name) {
		return "", ErrNameUTF8
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", ErrNameControl
	}
	if !strings.Contains(name, `\`) {
		// Most names are clean already but for the leading slash of an
		// HTTP path: the name itself, without building it anew.
		if clean := strings.TrimLeft(name, "/"); plainElements(clean) {
			return clean, nil
		}
	}
	name = strings.ReplaceAll(name, `\`, "/")
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, p := range parts {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", ErrNameParent
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return "", ErrEmptyName
	}
	return strings.Join(out, "/"), nil
}

// plainElements reports whether the slash-separated elements of name are
// all there is to keep: none empty, "." or "..", and at least one.
func plainElements(name string) bool {
	if name == "" {
		return false
	}
	for rest, more := name, true; more; {
		var e string
		e, rest, more = strings.Cut(rest, "/")
		if e == "" || e == "." || e == ".." {
			return false
		}
	}
	return true
}
