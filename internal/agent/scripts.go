package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
)

// Shell runs the commissioning scripts: busybox's in the ephemeral
// environment.
const Shell = "/bin/sh"

// maxScriptsReply bounds the rack's answer to GET scripts: every script
// at its largest, JSON-escaped.
const maxScriptsReply = events.MaxScripts * events.MaxScriptContent * 2

// ParseScripts reads and checks the rack's answer to GET scripts. It is
// what the network said: every script must have a script's name (once,
// in order), content within its bound that hashes to its sha256, and a
// timeout within bounds; at most events.MaxScripts of them. Anything else
// refuses the whole answer: running part of an operator's scripts, or
// others than theirs, would make a machine ready that is not.
func ParseScripts(b []byte) ([]events.CommissioningScript, error) {
	var reply struct {
		Scripts *[]events.CommissioningScript `json:"scripts"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&reply); err != nil {
		return nil, fmt.Errorf("scripts: not a JSON object: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("scripts: more than one JSON value")
	}
	if reply.Scripts == nil {
		return nil, errors.New("scripts: no scripts list")
	}
	list := *reply.Scripts
	if len(list) > events.MaxScripts {
		return nil, fmt.Errorf("scripts: %d of them, at most %d", len(list), events.MaxScripts)
	}
	var errs []error
	for i, s := range list {
		switch {
		case !events.ValidScriptName(s.Name):
			errs = append(errs, fmt.Errorf("scripts[%d]: name %.70q is not a script's", i, s.Name))
			continue
		case i > 0 && s.Name <= list[i-1].Name:
			errs = append(errs, fmt.Errorf("scripts[%d]: %s out of name order", i, s.Name))
		}
		switch {
		case s.Content == "" || len(s.Content) > events.MaxScriptContent:
			errs = append(errs, fmt.Errorf("scripts[%d] %s: content of %d bytes, want 1 to %d", i, s.Name, len(s.Content), events.MaxScriptContent))
		case events.ScriptSHA256(s.Content) != s.SHA256:
			errs = append(errs, fmt.Errorf("scripts[%d] %s: content does not hash to its sha256", i, s.Name))
		}
		if s.TimeoutSeconds < 1 || s.TimeoutSeconds > events.MaxScriptTimeout {
			errs = append(errs, fmt.Errorf("scripts[%d] %s: timeout_seconds %d, want 1 to %d", i, s.Name, s.TimeoutSeconds, events.MaxScriptTimeout))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("scripts: %w", errors.Join(errs...))
	}
	return list, nil
}

// runScripts fetches the commissioning scripts and runs them in order,
// reporting each; it returns the commissioning's outcome. The first
// script that exits non-zero or outlives its timeout ends the run, and
// the outcome names it with the end of its output.
func (c *client) runScripts(ctx context.Context) (bool, string) {
	log := c.cfg.Logger.With("rack", c.shown)
	list, err := c.fetchScripts(ctx)
	if err != nil {
		log.Error("commissioning scripts not fetched", "err", err)
		c.step(ctx, "scripts", events.AgentStepFailed, err.Error(), 0)
		return false, cut("commissioning scripts not fetched: " + err.Error())
	}
	machineID := c.machineID()
	for _, s := range list {
		step := "script:" + s.Name
		c.step(ctx, step, events.AgentStepStarted, "", 0)
		r := runScript(ctx, s, machineID, c.cfg.ScriptDir)
		log.Info("commissioning script ran", "script", s.Name, "exit_code", r.ExitCode, "duration_ms", r.DurationMS, "err", r.err)
		body, _ := json.Marshal(map[string]any{"name": s.Name, "exit_code": r.ExitCode, "output": r.Output,
			"truncated": r.Truncated, "duration_ms": r.DurationMS})
		if err := c.post(ctx, "script", body); err != nil {
			c.step(ctx, step, events.AgentStepFailed, "result not reported: "+err.Error(), 0)
			return false, cut(fmt.Sprintf("commissioning script %s: result not reported: %v", s.Name, err))
		}
		if r.ExitCode != 0 {
			msg := r.failure(s)
			c.step(ctx, step, events.AgentStepFailed, msg, 100)
			return false, msg
		}
		c.step(ctx, step, events.AgentStepDone, fmt.Sprintf("exited 0 in %v", time.Duration(r.DurationMS)*time.Millisecond), 100)
	}
	return true, ""
}

// fetchScripts GETs the scripts, trying again as post does. A rack that
// serves no scripts (404: one that predates them) runs none.
func (c *client) fetchScripts(ctx context.Context) ([]events.CommissioningScript, error) {
	wait := c.cfg.Backoff
	for try := 1; ; try++ {
		b, status, err := c.get(ctx, "scripts")
		switch {
		case err == nil && status == http.StatusOK:
			return ParseScripts(b)
		case err == nil && status == http.StatusNotFound:
			c.cfg.Logger.Warn("the rack serves no commissioning scripts: none run")
			return nil, nil
		case err == nil:
			err = fmt.Errorf("GET %s/scripts: %d %s: %s", c.shown, status, http.StatusText(status), strings.TrimSpace(string(b[:min(len(b), 512)])))
			if status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout {
				return nil, err
			}
		}
		if try >= c.cfg.Attempts {
			return nil, err
		}
		c.cfg.Logger.Warn("request failed, trying again", "endpoint", "scripts", "try", try, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (after %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func (c *client) get(ctx context.Context, endpoint string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/"+endpoint, nil)
	if err != nil {
		return nil, 0, errors.New("cannot make the request")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr *url.Error // names the URL, credential and all
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, 0, fmt.Errorf("GET %s/%s: %w", c.shown, endpoint, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxScriptsReply+1))
	if err != nil {
		return nil, 0, fmt.Errorf("GET %s/%s: %w", c.shown, endpoint, err)
	}
	if len(b) > maxScriptsReply {
		return nil, 0, fmt.Errorf("GET %s/%s: answer over %d bytes", c.shown, endpoint, maxScriptsReply)
	}
	return b, resp.StatusCode, nil
}

// machineID is the machine of the agent's URL (<base>/agent/<machine>/<credential>).
func (c *client) machineID() string {
	u, err := url.Parse(c.base)
	if err != nil {
		return ""
	}
	return path.Base(path.Dir(u.Path))
}

// scriptRun is what running one script came to. ExitCode is -1 when the
// script was killed or could not be started (err says which).
type scriptRun struct {
	ExitCode   int
	Output     string
	Truncated  bool
	DurationMS int64
	timedOut   bool
	err        error
}

// failure is the commissioning's outcome for a failed script: its name,
// how it ended, and as much of the end of its output as the message holds.
func (r scriptRun) failure(s events.CommissioningScript) string {
	head := fmt.Sprintf("commissioning script %s exited %d", s.Name, r.ExitCode)
	switch {
	case r.timedOut:
		head = fmt.Sprintf("commissioning script %s timed out after %ds", s.Name, s.TimeoutSeconds)
	case r.err != nil && r.ExitCode == -1:
		head = fmt.Sprintf("commissioning script %s did not run to its end: %v", s.Name, r.err)
	}
	out := strings.TrimSpace(r.Output)
	if out == "" {
		return cut(head)
	}
	room := events.MaxAgentMessage - len(head) - 2
	if room <= 0 {
		return cut(head)
	}
	if len(out) > room {
		out = lastLines(out, room)
	}
	return head + ": " + out
}

// lastLines is the end of s within limit bytes, from a line's start when
// a whole line fits, else from a character's.
func lastLines(s string, limit int) string {
	t := s[len(s)-limit:]
	if i := strings.IndexByte(t, '\n'); i >= 0 && i < len(t)-1 {
		return t[i+1:]
	}
	for len(t) > 0 && !utf8.RuneStart(t[0]) {
		t = t[1:]
	}
	return t
}

// cut bounds a message to what an agent_finished carries.
func cut(s string) string {
	if len(s) > events.MaxAgentMessage {
		s = strings.ToValidUTF8(s[:events.MaxAgentMessage], "")
	}
	return s
}

// runScript runs one script with Shell from a file of its own under dir
// (os.TempDir() when ""), in a process group of its own, which is killed
// whole at the script's timeout: a script's background children do not
// outlive it.
func runScript(ctx context.Context, s events.CommissioningScript, machineID, dir string) scriptRun {
	start := time.Now()
	out := &tail{limit: events.MaxScriptOutput}
	r := scriptRun{ExitCode: -1}
	finish := func() scriptRun {
		r.Output, r.Truncated = out.text()
		r.DurationMS = time.Since(start).Milliseconds()
		return r
	}
	work, err := os.MkdirTemp(dir, "rackplane-script-")
	if err != nil {
		r.err = err
		fmt.Fprintf(out, "rackplane-agent: cannot make the script's directory: %v\n", err)
		return finish()
	}
	defer os.RemoveAll(work)
	file := filepath.Join(work, s.Name)
	if err := os.WriteFile(file, []byte(s.Content), 0o700); err != nil {
		r.err = err
		fmt.Fprintf(out, "rackplane-agent: cannot write the script: %v\n", err)
		return finish()
	}
	timeout := time.Duration(s.TimeoutSeconds) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, Shell, file)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "RACKPLANE_MACHINE_ID="+machineID, "RACKPLANE_SCRIPT_NAME="+s.Name)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child that left the group and holds the output open does not
	// hold the run up for long.
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if cmd.ProcessState != nil {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) || r.ExitCode == -1 {
		r.err = err
	}
	if ctx.Err() == context.DeadlineExceeded {
		r.timedOut, r.ExitCode = true, -1
		fmt.Fprintf(out, "\nrackplane-agent: killed at its timeout of %v\n", timeout)
	}
	return finish()
}

// tail keeps the last limit bytes written to it.
type tail struct {
	limit int
	mu    sync.Mutex
	buf   []byte
	cut   bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.cut = true
	}
	return len(p), nil
}

// text returns the tail as valid UTF-8 from a character's start (a
// cut may have split one), and whether anything was cut.
func (t *tail) text() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.cut {
		for i := 0; i < len(b) && i < utf8.UTFMax && !utf8.RuneStart(b[0]); i++ {
			b = b[1:]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), t.cut
}
