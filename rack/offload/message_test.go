package offload

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzReadMessage checks the offload request parser on arbitrary bytes:
// it never panics, accepts only local NUL remote NUL name NUL "$", and
// what it accepts round-trips.
func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{"10.0.0.1\x0010.0.0.2\x00pxelinux.0\x00$", "a\x00b\x00c\x00X", "a\x00b\x00c\x00$\x00x", "\x00\x00\x00$", "no nul"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := readMessage(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, s := range []string{m.local, m.remote, m.name} {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("field with NUL from %q", in)
			}
		}
		enc := m.local + "\x00" + m.remote + "\x00" + m.name + "\x00$"
		if !bytes.HasPrefix(in, []byte(enc)) {
			t.Fatalf("parsed %q from %q", enc, in)
		}
		again, err := readMessage(strings.NewReader(enc))
		if err != nil || again != m {
			t.Fatalf("round trip of %q: %+v %v", enc, again, err)
		}
	})
}
