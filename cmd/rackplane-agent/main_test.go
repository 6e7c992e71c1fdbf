package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/events"
)

// TestInventoryCommand: the command prints one inventory that decodes,
// with the boot NIC the flag or the kernel command line names.
func TestInventoryCommand(t *testing.T) {
	const tree = "../../internal/inventory/testdata/amd64-vm"
	for _, tt := range []struct {
		args    []string
		boot    string // the NIC marked boot
		wantErr string
	}{
		{[]string{"inventory", "-root", tree, "-boot-mac", "02:FC:00:00:00:01"}, "eth0", ""},
		{[]string{"inventory", "-root", tree}, "", ""}, // the tree has no /proc/cmdline
		{[]string{"inventory", "-root", tree, "-boot-mac", "52:54:00:00:00:99"}, "", ""},
		{[]string{"inventory", "-root", tree, "-boot-mac", "nope"}, "", "-boot-mac"},
		{[]string{"inventory", "-root", t.TempDir()}, "", "cpuinfo"},
		{[]string{"inventory", "extra"}, "", "unexpected arguments"},
		{[]string{"erase"}, "", "unknown command"},
		{nil, "", "no command"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(tt.args, &stdout, &stderr)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: %v, want an error naming %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v\n%s", tt.args, err, stderr.String())
		}
		inv, err := events.DecodeInventory(bytes.TrimSpace(stdout.Bytes()))
		if err != nil {
			t.Fatalf("%q printed what does not decode: %v\n%s", tt.args, err, stdout.String())
		}
		boot := ""
		for _, n := range inv.NICs {
			if n.Boot {
				boot = n.Name
			}
		}
		if boot != tt.boot {
			t.Errorf("%q: boot NIC %q, want %q", tt.args, boot, tt.boot)
		}
		if strings.Contains(strings.Join(tt.args, " "), "52:54:00:00:00:99") && !strings.Contains(stderr.String(), "no NIC has the boot MAC") {
			t.Errorf("no warning of a boot MAC no NIC has: %q", stderr.String())
		}
	}
}
