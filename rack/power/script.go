package power

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// The scripts of a script driver, by action. on, off and status are
// required; without power-cycle a cycle is power-off then power-on;
// soft_off and set_boot need their scripts.
var scriptNames = map[events.PowerAction]string{
	events.PowerOn: "power-on", events.PowerOff: "power-off", events.PowerStatus: "power-status",
	events.PowerCycle: "power-cycle", events.PowerSoftOff: "power-soft-off", events.PowerSetBoot: "set-boot",
}

var requiredScripts = []events.PowerAction{events.PowerOn, events.PowerOff, events.PowerStatus}

// maxStatusOutput bounds what power-status may print.
const maxStatusOutput = 4096

// scriptDriver is a directory of power scripts, as found on disk.
type scriptDriver struct {
	name, dir string
	available bool
	detail    string
	actions   []events.PowerAction
	has       map[events.PowerAction]bool
}

// scanScripts lists the script drivers of a search path: each
// subdirectory is one, named after it; the first of a name wins. A name
// that is not a driver name, or is a built-in's, is passed over with a
// problem saying so.
func scanScripts(searchPath []string, builtin func(string) bool) ([]scriptDriver, []error) {
	var out []scriptDriver
	var problems []error
	seen := map[string]string{}
	for _, base := range searchPath {
		entries, err := os.ReadDir(base)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				problems = append(problems, fmt.Errorf("read %s: %w", base, err))
			}
			continue
		}
		for _, e := range entries {
			dir := filepath.Join(base, e.Name())
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				continue
			}
			name := e.Name()
			switch {
			case !driverRE.MatchString(name):
				problems = append(problems, fmt.Errorf("%s: %q is not a driver name (lower-case letters, digits, '_', '.', '-')", dir, name))
			case builtin(name):
				problems = append(problems, fmt.Errorf("%s: %s is a built-in driver's name; the built-in one is used", dir, name))
			case seen[name] != "":
				problems = append(problems, fmt.Errorf("%s: shadowed by %s, earlier in the search path", dir, seen[name]))
			default:
				seen[name] = dir
				out = append(out, loadScript(name, dir))
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, problems
}

// loadScript reads a script driver's directory as it is now.
func loadScript(name, dir string) scriptDriver {
	s := scriptDriver{name: name, dir: dir, has: map[events.PowerAction]bool{}}
	var missing []string
	for _, a := range events.PowerActions {
		err := executable(filepath.Join(dir, scriptNames[a]))
		if err == nil {
			s.has[a] = true
			continue
		}
		for _, r := range requiredScripts {
			if a == r {
				missing = append(missing, scriptProblem(scriptNames[a], err))
			}
		}
	}
	for _, a := range events.PowerActions {
		if s.has[a] || a == events.PowerCycle {
			s.actions = append(s.actions, a)
		}
	}
	s.available = len(missing) == 0
	s.detail = dir
	if !s.available {
		s.detail = dir + ": " + strings.Join(missing, "; ")
	}
	return s
}

func scriptProblem(script string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return script + " is missing"
	case strings.HasSuffix(err.Error(), "not executable"):
		return script + " is not executable"
	case strings.HasSuffix(err.Error(), "not a regular file"):
		return script + " is not a regular file"
	}
	return script + ": " + err.Error()
}

func (s scriptDriver) describe() events.PowerDriver {
	return events.PowerDriver{Name: s.name, Kind: events.PowerDriverScript, Available: s.available, Detail: s.detail, Actions: s.actions}
}

// check: a script driver takes any extras (each is POWER_EXTRA_<NAME>).
func (s scriptDriver) check(Request) error { return nil }

func (s scriptDriver) run(ctx context.Context, req Request) (string, error) {
	switch req.Action {
	case events.PowerStatus:
		out, err := s.script(ctx, req, events.PowerStatus)
		if err != nil {
			return "", err
		}
		state, err := ParseScriptStatus(out)
		if err != nil {
			return "", fail(events.PowerOutcomeFailed, "power driver %s: power-status: %v", s.name, err)
		}
		return state, nil
	case events.PowerCycle:
		if !s.has[events.PowerCycle] {
			if _, err := s.script(ctx, req, events.PowerOff); err != nil {
				return "", err
			}
			_, err := s.script(ctx, req, events.PowerOn)
			return events.PowerStateOn, err
		}
		_, err := s.script(ctx, req, events.PowerCycle)
		return events.PowerStateOn, err
	case events.PowerOn:
		_, err := s.script(ctx, req, events.PowerOn)
		return events.PowerStateOn, err
	case events.PowerOff:
		_, err := s.script(ctx, req, events.PowerOff)
		return events.PowerStateOff, err
	default: // soft_off, set_boot: the manager checked the script exists
		_, err := s.script(ctx, req, req.Action)
		return events.PowerStateUnknown, err
	}
}

// Exit statuses of a script that name the failure's outcome (see the
// package documentation).
const (
	ExitAuthFailed  = 3
	ExitUnreachable = 4
)

// script runs the script of action a within ctx's deadline and returns
// its stdout.
func (s scriptDriver) script(ctx context.Context, req Request, a events.PowerAction) ([]byte, error) {
	name := scriptNames[a]
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, fail(events.PowerOutcomeTimeout, "power driver %s: no time left to run %s", s.name, name)
	}
	r := scriptrun.Run(ctx, scriptrun.Spec{
		Dir: s.dir, Path: name, Env: scriptEnv(req), Marker: RunMarker, Timeout: timeout,
		StdoutLimit: maxStatusOutput, Secrets: []string{req.Parameters.Password},
	})
	if r.Err != nil {
		outcome := events.PowerOutcomeFailed
		switch {
		case r.TimedOut || r.Cancelled:
			outcome = events.PowerOutcomeTimeout
		case r.ExitCode != nil && *r.ExitCode == ExitAuthFailed:
			outcome = events.PowerOutcomeAuthFailed
		case r.ExitCode != nil && *r.ExitCode == ExitUnreachable:
			outcome = events.PowerOutcomeUnreachable
		}
		return nil, fail(outcome, "power driver %s: %v%s", s.name, r.Err, scriptrun.TailText(r.Tail))
	}
	if r.Overflow && a == events.PowerStatus {
		return nil, fail(events.PowerOutcomeFailed, "power driver %s: power-status printed more than %d bytes", s.name, maxStatusOutput)
	}
	return r.Stdout, nil
}

// scriptEnv is a script's whole environment (beside RunMarker).
func scriptEnv(req Request) []string {
	p := req.Parameters
	env := []string{
		"PATH=" + scriptrun.SafePath,
		"POWER_ACTION=" + string(req.Action),
		"POWER_MACHINE_ID=" + req.MachineID,
		"POWER_ADDRESS=" + p.Address,
		"POWER_USER=" + p.Username,
		"POWER_PASSWORD=" + p.Password,
	}
	if p.Port != 0 {
		env = append(env, "POWER_PORT="+strconv.Itoa(p.Port))
	}
	if req.Action == events.PowerSetBoot {
		env = append(env, "POWER_BOOT_DEVICE="+req.BootDevice)
	}
	for k, v := range p.Extra {
		env = append(env, "POWER_EXTRA_"+strings.ToUpper(k)+"="+v)
	}
	sort.Strings(env)
	return env
}

// ParseScriptStatus reads what power-status printed: on or off (any
// case, surrounding blanks ignored) on the first line that is not blank.
func ParseScriptStatus(out []byte) (string, error) {
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		switch strings.ToLower(line) {
		case events.PowerStateOn:
			return events.PowerStateOn, nil
		case events.PowerStateOff:
			return events.PowerStateOff, nil
		}
		return "", errors.New("printed " + strconv.Quote(truncate(line, 80)) + ", want on or off")
	}
	return "", errors.New("printed nothing, want on or off")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
