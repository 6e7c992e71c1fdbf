// Package scriptruntest helps tests of code that runs scripts check that
// nothing a script started outlives it.
package scriptruntest

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// ProcessGone reports whether pid has exited (a zombie nobody reaps counts
// as gone: it runs nothing).
func ProcessGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

// Eventually polls cond until it holds or 30 seconds pass, then fails t
// saying what it waited for. The bound is for a condition that never
// comes: on two loaded cores under -race, a QEMU started with nice took
// more than 5 seconds to open its QMP socket.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WriteFile writes body to path with mode (the umask does not apply):
// scripts are written 0755, a script left not executable 0644.
func WriteFile(t testing.TB, path, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
