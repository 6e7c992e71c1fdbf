package netns

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread moved into the namespace named ns, then moves
// the thread back, and returns f's error. Sockets f opens stay in ns for
// good. Should the way back fail, the thread is not unlocked, so it ends
// with its goroutine rather than serve others in the wrong namespace.
// (Threads must not die needlessly: a child started with Pdeathsig from
// one is killed with it.)
//
// f runs on a goroutine of its own: should it call runtime.Goexit (a
// t.Fatal inside it), Do returns an error rather than hang.
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				errc <- errors.New("netns: the function given to Do did not return (t.Fatal belongs on the test's goroutine)")
			}
		}()
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			returned = true
			errc <- err
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			returned = true
			errc <- fmt.Errorf("network namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			returned = true
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		returned = true
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
