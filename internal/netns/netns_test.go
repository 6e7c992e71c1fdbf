package netns_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/netns"
)

// namespace makes a network namespace with a bridge only it
// has, removed when the test ends.
func namespace(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs ip (iproute2) and root")
	}
	ns := fmt.Sprintf("rp-netns-%d", os.Getpid())
	for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "add", "only-here", "type", "bridge"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s (this test needs root)", strings.Join(args, " "), err, out)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		}
	}
	return ns
}

func hasInterface(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func TestDoRunsInTheNamespaceAndComesBack(t *testing.T) {
	ns := namespace(t)
	var inside bool
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		inside = hasInterface("only-here")
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !inside {
		t.Error("f did not see the namespace's interface")
	}
	// Every thread of this process is back in the process's namespace.
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		// A thread may end meanwhile: only a namespace read counts.
		if got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && got != home {
			t.Errorf("thread %s is in %s after Do, not in the process's %s", task.Name(), got, home)
		}
	}
	// The listener stays in the namespace: its loopback is not ours.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("dialled %s from outside the namespace: the socket left it", ln.Addr())
	}
}

func TestDoReportsWhatFails(t *testing.T) {
	ns := namespace(t)
	for _, tc := range []struct {
		name, ns string
		f        func() error
		want     string
	}{
		{"no such namespace", "rp-netns-absent", func() error { return nil }, "rp-netns-absent"},
		{"f's error", ns, func() error { return fmt.Errorf("refused here") }, "refused here"},
		{"f exits its goroutine", ns, func() error { runtime.Goexit(); return nil }, "did not return"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := netns.Do(tc.ns, tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Do: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
