package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// safePath is the only PATH a provider script sees: the rack's own
// environment never leaks into it (as in Ganeti since 2.5).
const safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// tailLines is how many lines of output a failure carries.
const tailLines = 20

// A line in a tail is cut here so that one runaway line cannot fill an
// event.
const maxTailLine = 1024

// waitDelay bounds the wait for a script's output pipes after it exits or
// is killed: a daemon it started may keep them open.
const waitDelay = 2 * time.Second

// run is the outcome of one script execution.
type run struct {
	stdout    []byte
	overflow  bool // stdout passed its limit
	tail      []string
	exitCode  *int
	timedOut  bool
	cancelled bool
	err       error
	started   time.Time
	duration  time.Duration
}

// RunMarker is the variable every script gets beside env, with a value of
// its own run: the processes it starts inherit it, so those that leave
// its process group and lose their parent can still be found and killed.
const RunMarker = "RACKPLANE_STORAGE_RUN"

// runScript runs dir/script with exactly env (and RunMarker), in dir,
// with no stdin. Its stdout and stderr both go to log; stdout is also kept
// (up to stdoutLimit) for attach. On timeout or when ctx ends everything
// the script started is killed (killTree): its process group, and the
// children that left it with setsid, so none outlives it.
func runScript(ctx context.Context, dir, script string, env []string, timeout time.Duration, log io.Writer, stdoutLimit int, now func() time.Time) run {
	r := run{started: now()}
	tail := &tailBuffer{max: 16 << 10}
	out := &limitedBuffer{max: stdoutLimit}
	combined := &syncWriter{w: io.MultiWriter(log, tail)}

	id := make([]byte, 8)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	marker := RunMarker + "=" + hex.EncodeToString(id)
	cmd := exec.Command(filepath.Join(dir, script))
	cmd.Dir = dir
	cmd.Env = append(slices.Clip(env), marker)
	cmd.Stdout = io.MultiWriter(out, combined)
	cmd.Stderr = combined
	cmd.SysProcAttr = scriptAttr()
	cmd.WaitDelay = waitDelay
	// The script's death signal (scriptAttr) is tied to this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.err = fmt.Errorf("start %s: %w", script, err)
		r.duration = time.Since(start)
		return r
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		r.timedOut = true
		killTree(cmd.Process.Pid, marker)
		err = <-done
	case <-ctx.Done():
		r.cancelled = true
		killTree(cmd.Process.Pid, marker)
		err = <-done
	}
	r.duration = time.Since(start)
	r.stdout, r.overflow = out.buf.Bytes(), out.over
	r.tail = tail.lines(tailLines)
	if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		code := cmd.ProcessState.ExitCode()
		r.exitCode = &code
	}
	switch {
	case r.timedOut:
		r.err = fmt.Errorf("%s did not finish within %s and was killed", script, timeout)
	case r.cancelled:
		r.err = fmt.Errorf("%s was killed: %w", script, ctx.Err())
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		r.err = fmt.Errorf("%s failed: %w", script, err)
	}
	return r
}

// syncWriter serialises writes from the stdout and stderr copiers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A log that cannot be written must not make the script fail on
	// SIGPIPE: report the bytes as taken.
	_, _ = s.w.Write(p)
	return len(p), nil
}

// limitedBuffer keeps the first max bytes and notes whether more came.
type limitedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	room := l.max - l.buf.Len()
	if len(p) > room {
		l.over = true
		l.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	l.buf.Write(p)
	return len(p), nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// lines returns the last n lines, each cut to maxTailLine bytes.
func (t *tailBuffer) lines(n int) []string {
	s := strings.TrimRight(strings.ToValidUTF8(string(t.buf), "\uFFFD"), "\n")
	if s == "" {
		return nil
	}
	all := strings.Split(s, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i, l := range all {
		l = strings.TrimRight(l, "\r")
		if len(l) > maxTailLine {
			l = strings.ToValidUTF8(l[:maxTailLine], "")
		}
		all[i] = l
	}
	return all
}
