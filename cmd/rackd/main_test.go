package main

import (
	"context"
	"strings"
	"testing"
)

// TestEveryBadSettingAtOnce: rackd names every flag it cannot parse and
// every invalid setting in one message, and a value a flag refuses is not
// reported a second time as the zero it would have left.
func TestEveryBadSettingAtOnce(t *testing.T) {
	err := run(context.Background(), []string{"-name", "", "-power-timeout", "5", "-tftp-window", "z", "-dhcp-mod", "proxy", "-data-dir", t.TempDir()})
	want := []string{"configuration:", `-power-timeout "5": want a duration such as 30s, 5m or 1h30m`, `-tftp-window "z": want a whole number`,
		"-dhcp-mod: no such flag; did you mean -dhcp-mode?", "-name is empty"}
	if err == nil {
		t.Fatal("started")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q missing from:\n%v", w, err)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n != len(want)-1 {
		t.Errorf("%d problems, want %d:\n%v", n, len(want)-1, err)
	}
}
