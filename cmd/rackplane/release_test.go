package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/regiontest"
)

// TestReleaseEraseCLI: rackplane release -erase sends the mode, which the
// region checks before anything else: an unknown one is named, a known
// one on a machine with nothing to release is the lifecycle's refusal.
func TestReleaseEraseCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	if out, err := d.rackplane([]string{"machine", "create"}, "-hostname", "er1", "-mac", "52:54:00:ee:03:01"); err != nil {
		t.Fatalf("machine create: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"release"}, "-erase", "shred", "er1"); err == nil || !strings.Contains(out+err.Error(), `erase "shred": want none, quick or full`) {
		t.Fatalf("release -erase shred: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"release"}, "-erase", "quick", "-power-off=false", "er1"); err == nil || !strings.Contains(out+err.Error(), "nothing to release") {
		t.Fatalf("release -erase quick of a ready machine: %v\n%s", err, out)
	}
}
