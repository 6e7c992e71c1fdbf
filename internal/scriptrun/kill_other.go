//go:build !linux

package scriptrun

import "syscall"

// scriptAttr starts a script in a process group of its own.
func scriptAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killTree kills the script's process group. Without /proc it cannot
// find the children that left the group.
func killTree(pid int, _ string) int {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	return 0
}
