package scriptrun

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// escapingScript starts, in dir, children every way a script can: one in
// its process group, one in a session of its own while the script lives
// (setsid), one orphaned in a session of its own (setsid -f: a double
// fork) and one in a session of its own that ignores SIGTERM and SIGHUP;
// each runs sleep with the argument tag and writes its pid to a file
// named after it. Then the script says "started" and hangs.
func escapingScript(tag string) string {
	return fmt.Sprintf(`cd "$WORK"
sleep %[1]s & echo $! > in-group
setsid sleep %[1]s & echo $! > own-session
setsid -f sh -c 'sleep %[1]s & echo $! > orphan'
(trap '' TERM HUP INT; exec setsid sleep %[1]s) & echo $! > deaf
while [ ! -s orphan ]; do sleep 0.01; done
echo started
sleep 600`, tag)
}

// children are the pid files escapingScript writes.
var children = []string{"in-group", "own-session", "orphan", "deaf"}

// sleepTag is an argument of sleep no other process has: sleep 1000 and
// some nanoseconds.
func sleepTag() string { return fmt.Sprintf("1000.%09d", time.Now().UnixNano()%1e9) }

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"sh", "setsid", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("this test runs %s: %v", tool, err)
		}
	}
}

// leftAlive checks that every child escapingScript started in work is
// gone, and that no process at all runs sleep with tag.
func leftAlive(t *testing.T, work, tag string) {
	t.Helper()
	t.Cleanup(func() { killTagged(tag) })
	for _, name := range children {
		b, err := os.ReadFile(filepath.Join(work, name))
		if err != nil {
			t.Fatalf("the script did not start its %s child: %v", name, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("%s: %q", name, b)
		}
		scriptruntest.Eventually(t, "the "+name+" child ("+strconv.Itoa(pid)+") to be killed", func() bool { return scriptruntest.ProcessGone(pid) })
	}
	left := tagged(tag)
	for pid, cmd := range left {
		t.Errorf("process %d still runs %q", pid, cmd)
	}
	if len(left) == 0 {
		t.Logf("%d children, none left", len(children))
	}
}

// tagged returns the live processes that run sleep with tag.
func tagged(tag string) map[int]string {
	out := map[int]string{}
	for pid := range readProcs() { // zombies left out
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmd), tag) {
			out[pid] = strings.ReplaceAll(string(cmd), "\x00", " ")
		}
	}
	return out
}

// killTagged kills what a failing test left running.
func killTagged(tag string) {
	for pid := range tagged(tag) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestTimeoutKillsWhatTheScriptStarted: after a script's timeout no
// process it started is left, whichever way it started it.
func TestTimeoutKillsWhatTheScriptStarted(t *testing.T) {
	needTools(t)
	dir, tag := t.TempDir(), sleepTag()
	writeScript(t, filepath.Join(dir, "hang"), "WORK=.\n"+escapingScript(tag))
	// Long enough for a loaded machine to start four processes; the
	// test then checks that it did.
	r := Run(context.Background(), Spec{Dir: dir, Path: "hang", Env: []string{"PATH=" + SafePath}, Marker: testMarker, Timeout: 5 * time.Second})
	if !r.TimedOut || r.Err == nil || !strings.Contains(r.Err.Error(), "did not finish within 5s") || !slices.Contains(r.Tail, "started") {
		t.Fatalf("run %+v; want a timeout after the script said started", r)
	}
	leftAlive(t, dir, tag)
}

// TestCancelKillsWhatTheScriptStarted: the same when the run is cancelled
// (rackd stopping), once the script has started everything.
func TestCancelKillsWhatTheScriptStarted(t *testing.T) {
	needTools(t)
	dir, tag := t.TempDir(), sleepTag()
	writeScript(t, filepath.Join(dir, "hang"), "WORK=.\n"+escapingScript(tag))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancelled once the script has started everything: every child
		// has written its pid (the orphan's can come before the deaf
		// one's, which a loaded machine showed).
		for range 3000 {
			all := true
			for _, name := range children {
				if b, _ := os.ReadFile(filepath.Join(dir, name)); len(b) == 0 {
					all = false
				}
			}
			if all {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	r := Run(ctx, Spec{Dir: dir, Path: "hang", Env: []string{"PATH=" + SafePath}, Marker: testMarker, Timeout: time.Hour})
	if !r.Cancelled {
		t.Fatalf("run %+v", r)
	}
	leftAlive(t, dir, tag)
}

func TestParseStat(t *testing.T) {
	for _, tt := range []struct {
		line string
		want procStat
		ok   bool
	}{
		{"123 (sleep) S 45 45 45 0 -1", procStat{ppid: 45, pgrp: 45}, true},
		{"123 (a (b) c) R 1 99 99 0", procStat{ppid: 1, pgrp: 99}, true},
		{"123 (my prog) S 7 8 8", procStat{ppid: 7, pgrp: 8}, true},
		{"123 (sh) Z 45 45 45", procStat{}, false},
		{"123 (sh) S", procStat{}, false},
		{"garbage", procStat{}, false},
	} {
		if got, ok := parseStat(tt.line); got != tt.want || ok != tt.ok {
			t.Errorf("parseStat(%q) = %+v %v, want %+v %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}
