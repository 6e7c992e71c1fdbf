package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/regiontest"
)

// TestScriptsCLI: commissioning scripts added, listed, shown, replaced
// and removed through the CLI; a bad name refused naming the field; a
// machine never commissioned has no results; against rackplane dev.
func TestScriptsCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts rackplane dev")
	}
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	file := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(file, []byte("#!/bin/sh\necho checking\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := d.rackplane([]string{"scripts", "add"}, "10-check", file, "-timeout", "90s", "-description", "a check"); err != nil ||
		!strings.Contains(out, "10-check") {
		t.Fatalf("scripts add: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "list"}); err != nil || !strings.Contains(out, "10-check") ||
		!strings.Contains(out, "1m30s") || !strings.Contains(out, "a check") {
		t.Fatalf("scripts list: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "show"}, "10-check"); err != nil || !strings.HasSuffix(out, "#!/bin/sh\necho checking\n") {
		t.Fatalf("scripts show: %v\n%q", err, out)
	}
	if err := os.WriteFile(file, []byte("echo again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := d.rackplane([]string{"scripts", "add"}, "10-check", file); err != nil {
		t.Fatalf("scripts add, again: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "show"}, "10-check"); err != nil || !strings.HasSuffix(out, "\necho again\n") || !strings.Contains(out, "5m0s") {
		t.Fatalf("scripts show after replacing: %v\n%q", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "add"}, "Bad Name", file); err == nil || !strings.Contains(err.Error(), "name") ||
		!strings.Contains(err.Error(), "400") {
		t.Fatalf("bad name: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "create"}, "-hostname", "sc1", "-mac", "52:54:00:ee:03:01"); err != nil {
		t.Fatalf("machine create: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"machine", "scripts"}, "sc1"); err != nil || !strings.Contains(out, "no commissioning script has run") {
		t.Fatalf("machine scripts: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "rm"}, "10-check"); err != nil {
		t.Fatalf("scripts rm: %v\n%s", err, out)
	}
	if out, err := d.rackplane([]string{"scripts", "show"}, "10-check"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("scripts show after rm: %v\n%s", err, out)
	}
}
