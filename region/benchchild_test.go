package region_test

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// benchChild is this test binary started again by a benchmark, its
// TestMain turned by env into another part of the system (a NATS server,
// a region, racks), so that the part runs and is measured in a process of
// its own. It ends when its stdin closes, at b's cleanup, and is killed if
// it has not 30 s after.
type benchChild struct {
	b     *testing.B
	name  string
	proc  *os.Process
	stdin io.WriteCloser
	// lines is its stdout, a line at a time, closed when it has ended.
	lines chan string
	// log holds its stderr.
	log string
}

// startBenchChild starts name with env added to this process's
// environment, its stderr in logPath.
func startBenchChild(b *testing.B, name, logPath string, env ...string) *benchChild {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.Fatal(err)
	}
	c := &benchChild{b: b, name: name, proc: cmd.Process, stdin: stdin, lines: make(chan string, 1<<16), log: logPath}
	done := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
		close(c.lines)
		close(done)
	}()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	return c
}

// await returns the rest of the next line that starts with prefix,
// failing the benchmark if the process ends or says nothing within d.
func (c *benchChild) await(prefix string, d time.Duration) string {
	c.b.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.b.Fatalf("the %s process ended; its log: %s", c.name, c.log)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return rest
			}
		case <-timeout:
			c.b.Fatalf("the %s process did not say %q in %s; its log: %s", c.name, prefix, d, c.log)
		}
	}
}
