package power

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/rackplane/rackplane/events"
)

// Request is a power request (events.PowerRequest).
type Request = events.PowerRequest

// Reply is the answer to one (events.PowerReply).
type Reply = events.PowerReply

// Built-in drivers' names.
const (
	DriverIPMI    = "ipmi"
	DriverQEMU    = "qemu"
	DriverWebhook = "webhook"
)

// RunMarker is the variable every script and ipmitool run gets with a
// value of its own (scriptrun.Spec.Marker).
const RunMarker = "RACKPLANE_POWER_RUN"

var (
	uuidRE    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	machineRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	driverRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	extraRE   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
)

// driver runs the actions of one kind of BMC.
type driver interface {
	// describe says whether the driver can run here, and what it offers.
	describe() events.PowerDriver
	// check refuses, before anything runs, parameters the driver cannot
	// use; its error is a *failure (invalid, unsupported).
	check(req Request) error
	// run carries req out within ctx's deadline and returns the power
	// state it leaves (events.PowerStateOn and the rest). A failure's
	// error says its outcome (a *failure; failed otherwise).
	run(ctx context.Context, req Request) (string, error)
}

// failure is an action's failure with its outcome. Its message is for an
// operator, and goes through the manager's scrubbing before anyone sees
// it.
type failure struct {
	outcome string
	msg     string
}

func (f *failure) Error() string { return f.msg }

func fail(outcome, format string, args ...any) error {
	return &failure{outcome: outcome, msg: fmt.Sprintf(format, args...)}
}

// outcomeOf returns err's outcome: a *failure's, else failed.
func outcomeOf(err error) string {
	if err == nil {
		return events.PowerOutcomeOK
	}
	var f *failure
	if errors.As(err, &f) {
		return f.outcome
	}
	return events.PowerOutcomeFailed
}

// checkRequest refuses what no driver may get: the schema's rules, for
// callers that are not the rpc handler (which has the schema check them
// first).
func checkRequest(req Request) error {
	if !machineRE.MatchString(req.MachineID) {
		return fail(events.PowerOutcomeInvalid, "machine_id %.80q is not a machine id", req.MachineID)
	}
	if !driverRE.MatchString(req.Driver) {
		return fail(events.PowerOutcomeInvalid, "driver %.80q is not a driver name", req.Driver)
	}
	if _, ok := events.ParsePowerAction(string(req.Action)); !ok {
		return fail(events.PowerOutcomeInvalid, "unknown power action %.40q", req.Action)
	}
	switch {
	case req.Action == events.PowerSetBoot && req.BootDevice != events.BootDevicePXE && req.BootDevice != events.BootDeviceDisk:
		return fail(events.PowerOutcomeInvalid, "set_boot needs boot_device pxe or disk, not %.40q", req.BootDevice)
	case req.Action != events.PowerSetBoot && req.BootDevice != "":
		return fail(events.PowerOutcomeInvalid, "boot_device is for set_boot only")
	}
	p := req.Parameters
	if p.Port < 0 || p.Port > 65535 {
		return fail(events.PowerOutcomeInvalid, "port %d is out of range", p.Port)
	}
	for _, f := range []struct{ name, v string }{{"address", p.Address}, {"username", p.Username}, {"password", p.Password}} {
		if strings.ContainsAny(f.v, "\x00\r\n") {
			return fail(events.PowerOutcomeInvalid, "%s has a NUL or a line break", f.name)
		}
	}
	for k, v := range p.Extra {
		if !extraRE.MatchString(k) || strings.ContainsRune(v, 0) {
			return fail(events.PowerOutcomeInvalid, "extra %.80q: want a lower-case name and a value without NUL", k)
		}
	}
	return nil
}

// checkExtras refuses extras a driver does not know: a misspelt setting
// is an error an operator sees, not an option silently ignored.
func checkExtras(driver string, extra map[string]string, known func(string) bool) error {
	var unknown []string
	for k := range extra {
		if !known(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fail(events.PowerOutcomeInvalid, "the %s driver has no extra %s", driver, strings.Join(unknown, ", "))
}

// offers reports whether d offers action a.
func offers(d events.PowerDriver, a events.PowerAction) bool { return slices.Contains(d.Actions, a) }
