package handoff_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/rack/handoff"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{"pxelinux.0", "pxelinux.0", nil},
		{"/pxelinux.0", "pxelinux.0", nil},
		{"///a//b/./c", "a/b/c", nil},
		{`\boot\grub\grub.cfg`, "boot/grub/grub.cfg", nil},
		{"pxelinux.cfg/01-AA-BB-CC-DD-EE-FF", "pxelinux.cfg/01-AA-BB-CC-DD-EE-FF", nil},
		{"../../etc/passwd", "", handoff.ErrNameParent},
		{`..\..\etc\passwd`, "", handoff.ErrNameParent},
		{"a/../../b", "", handoff.ErrNameParent},
		{"a/b/..", "", handoff.ErrNameParent},
		{"..foo", "..foo", nil},
		{"/etc/passwd", "etc/passwd", nil},
		{"a\x00b", "", handoff.ErrNameNUL},
		{"a\nb", "", handoff.ErrNameControl},
		{"\xff\xfe", "", handoff.ErrNameUTF8},
		{"", "", handoff.ErrEmptyName},
		{"/", "", handoff.ErrEmptyName},
		{"./.", "", handoff.ErrEmptyName},
		{strings.Repeat("a", 2000), "", handoff.ErrNameTooLong},
	}
	for _, tt := range tests {
		got, err := handoff.Normalize(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestPrintable(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain/name", 100, "plain/name"},
		{"a\x00b", 100, `a\x00b`},
		{"\xffz", 100, `\xffz`},
		{"abcdef", 3, "abc"},
		{"ab\x00", 4, "ab"},
		{"é", 1, ""},
	}
	for _, tt := range tests {
		if got := handoff.Printable(tt.in, tt.max); got != tt.want {
			t.Errorf("Printable(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// FuzzNormalize checks the invariants every front-end relies on: a
// normalised name is relative, clean, free of NUL, backslashes and ".."
// elements, bounded, and normalising it again changes nothing.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"pxelinux.0", "../../etc/passwd", `\a\..\b`, "/a//b/./c", "a\x00b", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "...", "a/..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := handoff.Normalize(in)
		if err != nil {
			if got != "" {
				t.Fatalf("error %v with result %q", err, got)
			}
			return
		}
		if got == "" || strings.HasPrefix(got, "/") || strings.ContainsAny(got, "\x00\\") || len(got) > handoff.MaxNameLen {
			t.Fatalf("Normalize(%q) = %q", in, got)
		}
		for _, p := range strings.Split(got, "/") {
			if p == "" || p == "." || p == ".." {
				t.Fatalf("Normalize(%q) = %q has element %q", in, got, p)
			}
		}
		again, err := handoff.Normalize(got)
		if err != nil || again != got {
			t.Fatalf("Normalize not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
	})
}
