package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// TestFlagsAfterArguments: commands take their flags before or after
// their arguments, as the README writes them (`deploy node1 -os debian`).
func TestFlagsAfterArguments(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantOS   string
		wantWait bool
		wantArgs []string
	}{
		{"flags first", []string{"-os", "debian", "node1"}, "debian", false, []string{"node1"}},
		{"flags after", []string{"node1", "-os", "debian", "node2"}, "debian", false, []string{"node1", "node2"}},
		{"with =", []string{"node1", "-os=debian"}, "debian", false, []string{"node1"}},
		{"a boolean takes no value", []string{"node1", "-wait", "node2"}, "", true, []string{"node1", "node2"}},
		{"after -- all are arguments", []string{"node1", "--", "-os", "x"}, "", false, []string{"node1", "-os", "x"}},
		{"double dash flags", []string{"node1", "--os", "ubuntu"}, "ubuntu", false, []string{"node1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
			osName := fs.String("os", "", "")
			wait := fs.Bool("wait", false, "")
			if err := parse(fs, tt.args, io.Discard); err != nil {
				t.Fatal(err)
			}
			if *osName != tt.wantOS || *wait != tt.wantWait || !slices.Equal(fs.Args(), tt.wantArgs) {
				t.Fatalf("os %q wait %v args %q; want %q %v %q", *osName, *wait, fs.Args(), tt.wantOS, tt.wantWait, tt.wantArgs)
			}
		})
	}
	fs := flag.NewFlagSet("scripts add", flag.ContinueOnError)
	fs.String("description", "", "")
	pos, err := parseMixed(fs, []string{"check", "-description", "d", "--", "-file-"}, io.Discard)
	if err != nil || !slices.Equal(pos, []string{"check", "-file-"}) {
		t.Fatalf("parseMixed: %q %v, want [check -file-]", pos, err)
	}
	fs = flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.String("os", "", "")
	if err := parse(fs, []string{"node1", "-bogus"}, io.Discard); err == nil {
		t.Fatal("an unknown flag after the arguments was taken")
	}
}
