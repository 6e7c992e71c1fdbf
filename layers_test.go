package rackplane

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestLayers checks the module's import graph: the region and the rack
// share only the wire contract (events, schema) and the packages every
// part may use, so neither binary links the other's code, and the
// contract pulls in no client runtime (NATS, Prometheus): a rack written
// against it in Go needs nothing else, and changing how one side talks to
// NATS cannot change the contract.
func TestLayers(t *testing.T) {
	const module = "github.com/rackplane/rackplane/"
	tests := []struct {
		pkg       string
		forbidden []string // package path prefixes
		why       string
	}{
		{"./cmd/regiond", []string{module + "rack/"}, "regiond must not link rack code; move what crosses the wire to events"},
		{"./cmd/rackd", []string{module + "region/"}, "rackd must not link region code; move what crosses the wire to events"},
		{"./events", []string{"github.com/nats-io/", "github.com/prometheus/"}, "the wire contract must not pull in a NATS client or Prometheus; that belongs in internal/eventbus"},
		{"./cmd/rackplane-agent", []string{module + "rack/", module + "region/", "github.com/nats-io/", "github.com/prometheus/"},
			"the agent runs on the machine in an initramfs and talks to its rack over HTTP: it links neither controller nor a NATS client"},
		{"./schema", []string{"github.com/nats-io/", "github.com/prometheus/", module + "rack/", module + "region/"}, "the schema files are the contract alone"},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.pkg, "./"), func(t *testing.T) {
			deps := listDeps(t, tt.pkg)
			var bad []string
			for _, d := range deps {
				if slices.ContainsFunc(tt.forbidden, func(p string) bool { return strings.HasPrefix(d, p) }) {
					bad = append(bad, d)
				}
			}
			if len(bad) > 0 {
				t.Errorf("%s depends on %d forbidden packages (%s): %s\n%s", tt.pkg, len(bad), strings.Join(tt.forbidden, ", "),
					strings.Join(bad, " "), tt.why)
			}
		})
	}
}

// listDeps returns every package pkg depends on, itself included, as go
// list -deps gives them (test files left out: they may run both sides).
func listDeps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		var msg string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, msg)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s listed nothing", pkg)
	}
	return deps
}
