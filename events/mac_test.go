package events_test

import (
	"net"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
)

func TestCanonicalMAC(t *testing.T) {
	tests := []struct{ in, want string }{
		{"52:54:00:12:34:56", "52:54:00:12:34:56"},
		{"52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef"},
		{"52-54-00-AB-cd-EF", "52:54:00:ab:cd:ef"},
		{"525400ABCDEF", "52:54:00:ab:cd:ef"},
		{"5254.00ab.CDEF", "52:54:00:ab:cd:ef"},
		{"52:54-00:12:34:56", ""},
		{"52:54:00:12:34", ""},
		{"52:54:00:12:34:56:78", ""},
		{"5:254:00:12:34:56", ""},
		{":52:54:00:12:34:56", ""},
		{"52:54:00:12:34:5g", ""},
		{"52::54:00:12:3456", ""},
		{"52.54.00.12.34.56", ""},
		{"5254:0012:3456", ""},
		{"52540-0123456", ""},
		{" 52:54:00:12:34:56", ""},
		{"52:54:00:12:34:56\n", ""},
		{"1:2:3:4:5:6", ""},
		{"02:00:5e:10:00:00:00:01", ""},                                     // EUI-64
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", ""}, // IPoIB
		{"52:54:00:12:34:56:", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := events.CanonicalMAC(tt.in)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("CanonicalMAC(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "is not a MAC address such as 52:54:00:12:34:56") {
			t.Errorf("CanonicalMAC(%q): error %q does not say what a MAC looks like", tt.in, err)
		}
	}
}

// FuzzCanonicalMAC checks the rule set against net.ParseMAC, which the
// region used before: every 48-bit address it reads is accepted with the
// same octets, and the only other form accepted is twelve bare hex
// digits, as the rack always did. What comes out is canonical.
func FuzzCanonicalMAC(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "52-54-00-ab-cd-ef", "525400abcdef", "5254.00ab.cdef", "::::::",
		"5:254:00:12:34:56", "02:00:5e:10:00:00:00:01", "52:54:00:12:34:5G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := events.CanonicalMAC(in)
		hw, perr := net.ParseMAC(in)
		if perr == nil && len(hw) == 6 && (err != nil || got != hw.String()) {
			t.Fatalf("CanonicalMAC(%q) = %q, %v; net.ParseMAC reads %s", in, got, err, hw)
		}
		if err != nil {
			return
		}
		if len(got) != 17 || strings.Count(got, ":") != 5 || strings.ToLower(got) != got {
			t.Fatalf("CanonicalMAC(%q) = %q", in, got)
		}
		if again, err := events.CanonicalMAC(got); err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q %v", in, got, again, err)
		}
		if perr != nil && (len(in) != 12 || strings.Trim(strings.ToLower(in), "0123456789abcdef") != "") {
			t.Fatalf("CanonicalMAC(%q) = %q, but it is neither a form net.ParseMAC reads nor twelve hex digits", in, got)
		}
	})
}
