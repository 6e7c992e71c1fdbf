package power

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// ipmiDriver runs ipmitool (see the package documentation for why).
type ipmiDriver struct {
	tool string // configured path, or "" to look it up

	once    sync.Once
	version string // of the tool found first, for describe
}

func newIPMI(tool string) *ipmiDriver { return &ipmiDriver{tool: tool} }

// ipmiExtras are the extras the ipmi driver takes.
var ipmiExtras = map[string]bool{"cipher_suite": true, "privilege": true, "boot_type": true, "retries": true, "retry_interval": true}

var (
	ipmiHostRE = regexp.MustCompile(`^[A-Za-z0-9_:%][A-Za-z0-9_.:%-]{0,252}$`)
	// privileges maps the extra to ipmitool's -L.
	ipmiPrivileges = map[string]string{"": "ADMINISTRATOR", "administrator": "ADMINISTRATOR", "operator": "OPERATOR", "user": "USER"}
)

// path returns the ipmitool to run, or why there is none.
func (d *ipmiDriver) path() (string, error) {
	if d.tool != "" {
		return d.tool, executable(d.tool)
	}
	for _, dir := range filepath.SplitList(scriptrun.SafePath) {
		p := filepath.Join(dir, "ipmitool")
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", errors.New("ipmitool is not installed (Debian package ipmitool)")
}

func executable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return errors.New(p + " is not a regular file")
	case fi.Mode().Perm()&0o111 == 0:
		return errors.New(p + " is not executable")
	}
	return nil
}

func (d *ipmiDriver) describe() events.PowerDriver {
	desc := events.PowerDriver{Name: DriverIPMI, Kind: events.PowerDriverBuiltin, Actions: events.PowerActions}
	p, err := d.path()
	if err != nil {
		desc.Detail = err.Error()
		return desc
	}
	d.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, p, "-V").Output()
		d.version = strings.TrimSpace(string(out))
	})
	desc.Available = true
	desc.Detail = strings.TrimSpace(d.version + " (" + p + ")")
	return desc
}

func (d *ipmiDriver) check(req Request) error {
	p := req.Parameters
	if !ipmiHostRE.MatchString(p.Address) {
		return fail(events.PowerOutcomeInvalid, "ipmi needs the BMC's host name or IP address as address, not %.80q", p.Address)
	}
	// IPMI 2.0 keys are 20 bytes (ipmitool says so, after opening a
	// session for nothing); user names 16.
	if len(p.Password) > 20 || len(p.Username) > 16 {
		return fail(events.PowerOutcomeInvalid, "ipmi takes a user name of at most 16 bytes and a password of at most 20")
	}
	if strings.HasPrefix(p.Username, "-") {
		return fail(events.PowerOutcomeInvalid, "ipmi user name %.40q starts with a dash", p.Username)
	}
	if err := checkExtras(DriverIPMI, p.Extra, func(k string) bool { return ipmiExtras[k] }); err != nil {
		return err
	}
	if cs, ok := p.Extra["cipher_suite"]; ok {
		if n, err := strconv.Atoi(cs); err != nil || n < 0 || n > 17 {
			return fail(events.PowerOutcomeInvalid, "ipmi cipher_suite %.20q: want 0 to 17", cs)
		}
	}
	for k, limit := range map[string]int{"retries": 10, "retry_interval": 60} {
		if v, ok := p.Extra[k]; ok {
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > limit {
				return fail(events.PowerOutcomeInvalid, "ipmi %s %.20q: want 1 to %d", k, v, limit)
			}
		}
	}
	if _, ok := ipmiPrivileges[p.Extra["privilege"]]; !ok {
		return fail(events.PowerOutcomeInvalid, "ipmi privilege %.20q: want user, operator or administrator", p.Extra["privilege"])
	}
	if bt := p.Extra["boot_type"]; bt != "" && bt != "legacy" && bt != "efi" {
		return fail(events.PowerOutcomeInvalid, "ipmi boot_type %.20q: want legacy or efi", bt)
	}
	return nil
}

func (d *ipmiDriver) run(ctx context.Context, req Request) (string, error) {
	switch req.Action {
	case events.PowerStatus:
		return d.status(ctx, req)
	case events.PowerOn:
		return events.PowerStateOn, d.ipmitool(ctx, req, "power", "on")
	case events.PowerOff:
		return events.PowerStateOff, d.ipmitool(ctx, req, "power", "off")
	case events.PowerSoftOff:
		return events.PowerStateUnknown, d.ipmitool(ctx, req, "power", "soft")
	case events.PowerCycle:
		// Many BMCs refuse to cycle a machine that is off.
		state, err := d.status(ctx, req)
		if err != nil {
			return "", err
		}
		if state == events.PowerStateOff {
			return events.PowerStateOn, d.ipmitool(ctx, req, "power", "on")
		}
		return events.PowerStateOn, d.ipmitool(ctx, req, "power", "cycle")
	case events.PowerSetBoot:
		args := []string{"chassis", "bootdev", req.BootDevice}
		if req.Parameters.Extra["boot_type"] == "efi" {
			args = append(args, "options=efiboot")
		}
		return events.PowerStateUnknown, d.ipmitool(ctx, req, args...)
	}
	return "", fail(events.PowerOutcomeUnsupported, "ipmi has no action %s", req.Action)
}

func (d *ipmiDriver) status(ctx context.Context, req Request) (string, error) {
	out, err := d.exec(ctx, req, "power", "status")
	if err != nil {
		return "", err
	}
	state, err := ParseIPMIPowerStatus(out)
	if err != nil {
		return "", fail(events.PowerOutcomeFailed, "ipmitool power status: %v", err)
	}
	return state, nil
}

func (d *ipmiDriver) ipmitool(ctx context.Context, req Request, args ...string) error {
	_, err := d.exec(ctx, req, args...)
	return err
}

// exec runs ipmitool with the session options and args, and returns its
// stdout. The password goes in IPMI_PASSWORD (-E), never in the
// arguments.
func (d *ipmiDriver) exec(ctx context.Context, req Request, args ...string) ([]byte, error) {
	tool, err := d.path()
	if err != nil {
		return nil, fail(events.PowerOutcomeUnsupported, "%v", err)
	}
	p := req.Parameters
	port := p.Port
	if port == 0 {
		port = 623
	}
	cs := p.Extra["cipher_suite"]
	if cs == "" {
		cs = "3"
	}
	// -v makes ipmitool say why a session failed (RAKP errors for
	// credentials, no answer for an unreachable BMC).
	argv := []string{"-v", "-I", "lanplus", "-C", cs, "-L", ipmiPrivileges[p.Extra["privilege"]],
		"-H", p.Address, "-p", strconv.Itoa(port), "-E"}
	if p.Username != "" {
		argv = append(argv, "-U", p.Username)
	}
	// ipmitool's own: a BMC that does not answer is given up after
	// about 20s (-N 2 -R 4 for lanplus, give or take).
	if v, ok := p.Extra["retries"]; ok {
		argv = append(argv, "-R", v)
	}
	if v, ok := p.Extra["retry_interval"]; ok {
		argv = append(argv, "-N", v)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, fail(events.PowerOutcomeTimeout, "no time left to run ipmitool")
	}
	r := scriptrun.Run(ctx, scriptrun.Spec{
		Dir: "/", Path: tool, Args: append(argv, args...),
		Env:    []string{"PATH=" + scriptrun.SafePath, "IPMI_PASSWORD=" + p.Password},
		Marker: RunMarker, Timeout: timeout, StdoutLimit: 64 << 10, Secrets: []string{p.Password},
	})
	if r.Err != nil {
		outcome := ClassifyIPMIFailure(r.Tail)
		if r.TimedOut || r.Cancelled {
			outcome = events.PowerOutcomeTimeout
		}
		return nil, fail(outcome, "ipmitool %s: %v%s", strings.Join(args, " "), r.Err, scriptrun.TailText(withoutNoise(r.Tail)))
	}
	return r.Stdout, nil
}

// ipmiStatusRE matches ipmitool's answer to "power status".
var ipmiStatusRE = regexp.MustCompile(`(?m)^Chassis Power is (on|off)\s*$`)

// ParseIPMIPowerStatus reads the power state from the output of
// "ipmitool power status".
func ParseIPMIPowerStatus(out []byte) (string, error) {
	m := ipmiStatusRE.FindSubmatch(out)
	if m == nil {
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if first == "" {
			return "", errors.New("no output, want \"Chassis Power is on|off\"")
		}
		return "", errors.New("no \"Chassis Power is on|off\" in the output: " + strconv.Quote(truncate(first, 80)))
	}
	return string(m[1]), nil
}

// Lines of "ipmitool -v" that say why a session could not be had.
var (
	ipmiAuthMarkers = []string{"RAKP 2 HMAC is invalid", "RAKP 4 HMAC is invalid", "unauthorized name",
		"invalid name", "Insufficient privilege", "invalid role", "Invalid user name", "Invalid password"}
	ipmiUnreachableMarkers = []string{"Get Auth Capabilities error", "No response from remote controller",
		"Address lookup for", "Could not open socket", "Error issuing Get Channel Authentication Capabilities"}
)

// ClassifyIPMIFailure reads ipmitool's output of a failed run: refused
// credentials, a BMC that did not answer, or another failure.
func ClassifyIPMIFailure(tail []string) string {
	text := strings.Join(tail, "\n")
	for _, m := range ipmiAuthMarkers {
		if strings.Contains(text, m) {
			return events.PowerOutcomeAuthFailed
		}
	}
	for _, m := range ipmiUnreachableMarkers {
		if strings.Contains(text, m) {
			return events.PowerOutcomeUnreachable
		}
	}
	return events.PowerOutcomeFailed
}

// withoutNoise drops what -v adds that says nothing about a failure.
func withoutNoise(tail []string) []string {
	out := tail[:0:0]
	for _, l := range tail {
		if l != "Loading IANA PEN Registry..." && !strings.HasPrefix(l, "Running Get VSO Capabilities") {
			out = append(out, l)
		}
	}
	return out
}
