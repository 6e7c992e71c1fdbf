package metadata

import (
	"strings"
	"testing"

	"github.com/google/uuid"
)

// FuzzParsePath: no path panics the parser, and a path it takes names a
// canonical machine id, a credential of URL-safe characters and one of
// the documents served.
func FuzzParsePath(f *testing.F) {
	for _, p := range []string{
		"/metadata/0190f0e0-0000-7000-8000-00000000d001/abcDEF_-9/meta-data",
		"/metadata/0190f0e0-0000-7000-8000-00000000d001/c/latest/meta-data/instance-id",
		"/metadata/0190f0e0-0000-7000-8000-00000000d001/c/../c/user-data",
		"/metadata/0190F0E0-0000-7000-8000-00000000D001/c/phone-home",
		"/metadata//c/meta-data",
		"/metadata/x",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := ParsePath(p)
		if err != nil {
			return
		}
		if _, err := uuid.Parse(r.MachineID); err != nil || strings.ToLower(r.MachineID) != r.MachineID {
			t.Fatalf("machine %q", r.MachineID)
		}
		if r.Credential == "" || strings.ContainsAny(r.Credential, "/.% \n") {
			t.Fatalf("credential %q", r.Credential)
		}
		found := false
		for _, d := range routes {
			found = found || d == r.Doc
		}
		if !found {
			t.Fatalf("doc %q", r.Doc)
		}
	})
}
