package scriptrun

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

// SafePath is the only PATH a script should see: the rack's own
// environment never leaks into it (as in Ganeti since 2.5).
const SafePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// TailLines is how many lines of output a Result's Tail keeps.
const TailLines = 20

// MaxTailLine is where a line of the tail is cut, so that one runaway line
// cannot fill an event.
const MaxTailLine = 1024

// Mask replaces each of Spec.Secrets in the tail.
const Mask = "********"

// tailBytes is how much of the end of the output is kept for the tail.
const tailBytes = 16 << 10

// waitDelay bounds the wait for a script's output pipes after it exits or
// is killed: a daemon it started may keep them open.
const waitDelay = 2 * time.Second

// Spec says what to run and how.
type Spec struct {
	// Dir is the working directory. Path, when relative, is taken in it.
	Dir  string
	Path string
	Args []string
	// Env is the script's whole environment, beside the marker: nothing
	// of this process's environment is passed on.
	Env []string
	// Marker names the variable every run gets with a value of its own
	// (RACKPLANE_STORAGE_RUN, say): the processes the script starts
	// inherit it, so those that leave its process group and lose their
	// parent can still be found and killed. Required.
	Marker string
	// Timeout bounds the run; past it everything the script started is
	// killed. Required.
	Timeout time.Duration
	// Log receives stdout and stderr as they come (nil: discarded). A
	// log that cannot be written does not fail the script.
	Log io.Writer
	// StdoutLimit is how many bytes of stdout Result.Stdout keeps.
	StdoutLimit int
	// Secrets are replaced by Mask in the tail (a password a script
	// might echo). The tail's first line is dropped when the output
	// was longer than what is kept of it, as it may hold the end of a
	// secret whose start was cut off.
	Secrets []string
	// Now is the clock of Result.Started (time.Now when nil).
	Now func() time.Time
}

// Result is the outcome of one run.
type Result struct {
	Stdout   []byte
	Overflow bool // stdout passed StdoutLimit
	// Tail is the last TailLines lines of stdout and stderr together.
	Tail []string
	// ExitCode is set when the script exited by itself (not by a signal).
	ExitCode  *int
	TimedOut  bool
	Cancelled bool
	// Err says what went wrong: a script that could not start, exited
	// non-zero, timed out or was cancelled. Nil on success.
	Err      error
	Started  time.Time
	Duration time.Duration
}

// Run runs s.Path with s.Args, exactly s.Env (and the marker), in s.Dir,
// with no stdin. On timeout (s.Timeout, or a deadline of ctx) or when
// ctx is cancelled everything the script
// started is killed (killTree): its process group, and the children that
// left it with setsid, so none outlives it. Run never panics on a
// script's behaviour; a Spec without Marker or Timeout is a caller's bug
// and fails the run.
func Run(ctx context.Context, s Spec) Result {
	now := s.Now
	if now == nil {
		now = time.Now
	}
	r := Result{Started: now()}
	name := filepath.Base(s.Path)
	if s.Marker == "" || s.Timeout <= 0 {
		r.Err = fmt.Errorf("run %s: a marker variable and a timeout are required", name)
		return r
	}
	log := s.Log
	if log == nil {
		log = io.Discard
	}
	tail := &tailBuffer{max: tailBytes}
	out := &limitedBuffer{max: s.StdoutLimit}
	combined := &syncWriter{w: io.MultiWriter(log, tail)}

	id := make([]byte, 8)
	_, _ = rand.Read(id) // crypto/rand.Read never fails
	marker := s.Marker + "=" + hex.EncodeToString(id)
	path := s.Path
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.Dir, path)
	}
	cmd := exec.Command(path, s.Args...)
	cmd.Dir = s.Dir
	cmd.Env = append(slices.Clip(s.Env), marker)
	cmd.Stdout = io.MultiWriter(out, combined)
	cmd.Stderr = combined
	cmd.SysProcAttr = scriptAttr()
	cmd.WaitDelay = waitDelay
	// The script's death signal (scriptAttr) is tied to this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.Err = fmt.Errorf("start %s: %w", name, err)
		r.Duration = time.Since(start)
		return r
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timer := time.NewTimer(s.Timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		r.TimedOut = true
		killTree(cmd.Process.Pid, marker)
		err = <-done
	case <-ctx.Done():
		// A deadline of ctx is a timeout too; anything else a cancel.
		r.TimedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		r.Cancelled = !r.TimedOut
		killTree(cmd.Process.Pid, marker)
		err = <-done
	}
	r.Duration = time.Since(start)
	r.Stdout, r.Overflow = out.buf.Bytes(), out.over
	r.Tail = tail.lines(TailLines, s.Secrets)
	if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		code := cmd.ProcessState.ExitCode()
		r.ExitCode = &code
	}
	switch {
	case r.TimedOut && ctx.Err() != nil:
		r.Err = fmt.Errorf("%s did not finish in time and was killed", name)
	case r.TimedOut:
		r.Err = fmt.Errorf("%s did not finish within %s and was killed", name, s.Timeout)
	case r.Cancelled:
		r.Err = fmt.Errorf("%s was killed: %w", name, ctx.Err())
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		r.Err = fmt.Errorf("%s failed: %w", name, err)
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
	cut bool // bytes were dropped from the front
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
		t.cut = true
	}
	return len(p), nil
}

// lines returns the last n lines, secrets masked, each cut to MaxTailLine
// bytes.
func (t *tailBuffer) lines(n int, secrets []string) []string {
	s := string(t.buf)
	if len(secrets) > 0 && t.cut {
		// What precedes the first newline may be the end of a secret.
		if _, rest, ok := strings.Cut(s, "\n"); ok {
			s = rest
		} else {
			s = ""
		}
	}
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, Mask)
		}
	}
	s = strings.TrimRight(strings.ToValidUTF8(s, "\uFFFD"), "\n")
	if s == "" {
		return nil
	}
	all := strings.Split(s, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i, l := range all {
		l = strings.TrimRight(l, "\r")
		if len(l) > MaxTailLine {
			l = strings.ToValidUTF8(l[:MaxTailLine], "")
		}
		all[i] = l
	}
	return all
}

// TailText renders a tail for an error message.
func TailText(tail []string) string {
	if len(tail) == 0 {
		return " (no output)"
	}
	return "; last output:\n" + strings.Join(tail, "\n")
}
