package scriptrun

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// scriptAttr starts a script in a process group of its own, and has the
// kernel kill it should rackd die (a script left running could race the
// action retried after the restart). Pdeathsig follows the thread that
// started the script, so Run keeps that thread until the script is
// reaped.
func scriptAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killRounds bounds the passes over /proc: each finds the processes
// forked since the last, which cannot fork again once stopped.
const killRounds = 10

// killTree kills everything script pid started: its process group, the
// processes descended from it by parent link (which a child that left the
// group with setsid keeps while its parent lives) and the processes whose
// environment carries the run's marker (which a child keeps when its
// parent is gone, as after a double fork). Each one found is stopped
// first, so that none forks or exits (handing its children to init)
// while the tree is read; then all are killed. It returns how many
// processes beside the group it found.
//
// What escapes: a process that left the session, cleared its
// environment and lost its parent before the kill, or runs as another
// user. Only a cgroup per run would hold those.
func killTree(pid int, marker string) int {
	_ = syscall.Kill(-pid, syscall.SIGSTOP)
	stopped := map[int]bool{pid: true}
	checked := map[int]bool{} // environments read, without the marker
	needle := []byte(marker + "\x00")
	for range killRounds {
		procs := readProcs()
		found := false
		for p, st := range procs {
			if stopped[p] {
				continue
			}
			mine := st.pgrp == pid || stopped[st.ppid]
			if !mine && !checked[p] {
				env, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/environ")
				mine = err == nil && bytes.Contains(append(env, 0), needle)
				checked[p] = !mine
			}
			if mine {
				_ = syscall.Kill(p, syscall.SIGSTOP)
				stopped[p] = true
				found = true
			}
		}
		if !found {
			break
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	for p := range stopped {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	return len(stopped) - 1
}

// procStat is what killTree reads of a process.
type procStat struct{ ppid, pgrp int }

// readProcs returns every process's parent and process group, as
// /proc/<pid>/stat gives them; zombies, which run nothing, are left out.
func readProcs() map[int]procStat {
	out := map[int]procStat{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	self := os.Getpid()
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if st, ok := parseStat(string(b)); ok {
			out[p] = st
		}
	}
	return out
}

// parseStat reads the parent and the process group from a
// /proc/<pid>/stat line, "pid (comm) state ppid pgrp ...": comm may
// hold spaces and parentheses, so the fields are counted from its
// closing one. A zombie is not ok.
func parseStat(line string) (procStat, bool) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(line[i+1:])
	if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgrp, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, pgrp: pgrp}, true
}
