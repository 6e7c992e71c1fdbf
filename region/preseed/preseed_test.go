package preseed

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name, src string
		ok        bool
	}{
		{"plain text", "d-i debian-installer/locale string en_US\n", true},
		{"variables", "hostname {{.Machine.Hostname}} os {{.OS.Name}}/{{.OS.Release}} url {{.URLs.Preseed}} macs {{join .Machine.MACs \",\"}}", true},
		{"unknown field", "{{.Machine.Nope}}", false},
		{"unknown function", "{{nope .Machine.ID}}", false},
		{"does not parse", "{{.Machine.ID", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check("p", tt.src)
			if tt.ok != (err == nil) {
				t.Fatalf("Check = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && rackplane.ErrorCode(err) != rackplane.EINVALID {
				t.Fatalf("code %s", rackplane.ErrorCode(err))
			}
		})
	}
}

func TestDiff(t *testing.T) {
	got := Diff("v1", "v2", "a\nb\nc\n", "a\nB\nc\nd\n")
	want := "--- v1\n+++ v2\n a\n-b\n+B\n c\n+d\n"
	if got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	if d := Diff("x", "y", "same\n", "same\n"); strings.ContainsAny(d[len("--- x\n+++ y\n"):], "+-") {
		t.Fatalf("identical documents differ: %s", d)
	}
}

func FuzzRender(f *testing.F) {
	f.Add("{{.Machine.Hostname}}")
	f.Add("{{range .Machine.MACs}}{{.}}{{end}}")
	f.Fuzz(func(t *testing.T, src string) {
		var v Vars
		_, _ = Render("f", src, v) // must not panic
	})
}
