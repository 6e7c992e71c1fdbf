package machine

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// Actions, as the API names them (POST /api/v1/machines/{id}/<action>);
// the first two and delete have routes of their own.
const (
	ActionUpdate     = "update"
	ActionDelete     = "delete"
	ActionDeploy     = "deploy"
	ActionRelease    = "release"
	ActionMarkFailed = "mark-failed"
	ActionMarkBroken = "mark-broken"
	ActionMarkFixed  = "mark-fixed"
	ActionCommission = "commission"
	ActionRescue     = "rescue"
	ActionExitRescue = "exit-rescue"
	// ActionSetTags replaces a machine's tags (PUT .../tags).
	ActionSetTags        = "set-tags"
	actionCreate         = "create"
	actionInstallReport  = "install-report"
	actionDeployTimeout  = "deploy-timeout"
	actionCommissionDone = "commissioning-report"
	// actionCommissionTimeout is the region's own: it fails a
	// commissioning whose agent said nothing in time.
	actionCommissionTimeout = "commission-timeout"
	actionReleaseDone       = "release-done"
	actionPowerFailed       = "power-failed"
	actionEraseDone         = "erase-report"
	// actionEraseTimeout fails an erase whose agent said nothing in
	// time, as actionCommissionTimeout does a commissioning.
	actionEraseTimeout = "erase-timeout"
	// actionDiskWritten is the agent's outcome of writing a disk image.
	actionDiskWritten = "disk-written"
)

const (
	statusNew           = events.MachineNew
	statusCommissioning = events.MachineCommissioning
	statusReady         = events.MachineReady
	statusDeploying     = events.MachineDeploying
	statusDeployed      = events.MachineDeployed
	statusReleasing     = events.MachineReleasing
	statusFailed        = events.MachineFailed
	statusBroken        = events.MachineBroken
	statusRescue        = events.MachineRescue
	statusErasing       = events.MachineErasing
)

// from says, for every action a machine can be asked for, the statuses it
// is allowed in. This table is the lifecycle: a status not listed refuses
// the action, with the hint of refusalHints.
var from = map[string][]string{
	ActionUpdate: events.MachineStatuses,
	// Tags are the operator's labels: any status may be relabelled.
	ActionSetTags: events.MachineStatuses,
	// A machine in the middle of an operation belongs to it: its record is
	// what the installer or the agent reports against.
	ActionDelete: {statusNew, statusReady, statusDeployed, statusFailed, statusBroken},
	ActionDeploy: {statusNew, statusReady, statusFailed},
	// A release again while releasing changes how (power_off), or ends
	// one stuck switching the machine off; while erasing, a release
	// without erase abandons the erase (the operator's explicit word that
	// the disks may stay as they are), one with erase starts it again.
	ActionRelease:    {statusDeploying, statusDeployed, statusReleasing, statusErasing, statusFailed, statusRescue},
	ActionMarkFailed: {statusCommissioning, statusDeploying, statusReleasing, statusErasing},
	// Not erasing: a broken machine marked fixed is ready, and a machine
	// whose erase was asked for must never be ready before it succeeded.
	ActionMarkBroken: {statusNew, statusCommissioning, statusReady, statusDeploying, statusDeployed, statusReleasing,
		statusFailed, statusRescue},
	ActionMarkFixed:         {statusBroken},
	ActionCommission:        {statusNew, statusReady, statusFailed, statusBroken},
	ActionRescue:            {statusDeployed, statusFailed, statusBroken},
	ActionExitRescue:        {statusRescue},
	actionInstallReport:     {statusDeploying},
	actionDeployTimeout:     {statusDeploying},
	actionCommissionDone:    {statusCommissioning},
	actionCommissionTimeout: {statusCommissioning},
	actionReleaseDone:       {statusReleasing},
	actionPowerFailed:       {statusDeploying, statusErasing},
	actionEraseDone:         {statusErasing},
	actionEraseTimeout:      {statusErasing},
	actionDiskWritten:       {statusDeploying},
}

// operatorActions are the actions the API serves and so offers clients,
// in the order a UI shows them. Rescue joins them when the region can
// boot the ephemeral environment for it.
var operatorActions = []string{ActionDeploy, ActionCommission, ActionRelease, ActionMarkFailed, ActionMarkBroken, ActionMarkFixed,
	ActionDelete}

// Allowed reports whether a machine in status may be asked for action.
func Allowed(status, action string) bool { return slices.Contains(from[action], status) }

// Actions returns the operator actions a machine in status allows now.
// The slice of a known status is shared by every machine in it (a page
// of machines costs no slice per machine): callers read it, never change
// it.
func Actions(status string) []string {
	if a, ok := actionsOf[status]; ok {
		return a
	}
	return actions(status)
}

func actions(status string) []string {
	out := []string{}
	for _, a := range operatorActions {
		if Allowed(status, a) {
			out = append(out, a)
		}
	}
	// An append makes a copy rather than write into another's.
	return slices.Clip(out)
}

// actionsOf is Actions of each status, found once.
var actionsOf = func() map[string][]string {
	m := map[string][]string{}
	for _, s := range events.MachineStatuses {
		m[s] = actions(s)
	}
	return m
}()

// refusalHints say what to do instead, by status then action; the
// fallback names the statuses the action is allowed in.
var refusalHints = map[string]map[string]string{
	statusDeploying: {
		ActionDeploy: "is already deploying; release it first",
		ActionDelete: "is deploying; release it or mark it failed first",
	},
	statusDeployed: {
		// A deploy reinstalls: on a machine in service that is a wipe, so
		// it takes an explicit release first.
		ActionDeploy: "is deployed; release it first to reinstall it",
	},
	statusCommissioning: {
		ActionDeploy: "is commissioning; wait for it to finish or mark it failed",
		ActionDelete: "is commissioning; mark it failed first",
	},
	statusReleasing: {
		ActionDeploy: "is releasing; deploy it once it is ready",
		ActionDelete: "is releasing; delete it once it is ready",
	},
	statusErasing: {
		ActionDeploy:     "is erasing its disks; deploy it once it is ready, or release it with erase none to abandon the erase",
		ActionDelete:     "is erasing its disks; mark it failed first",
		ActionMarkBroken: "is erasing its disks; mark it failed first",
		ActionCommission: "is erasing its disks; commission it once it is ready, or mark it failed first",
	},
	statusBroken: {
		ActionDeploy:  "is broken; mark it fixed first",
		ActionRelease: "is broken; mark it fixed first",
	},
	statusRescue: {
		ActionDeploy: "is in rescue mode; exit rescue first",
		ActionDelete: "is in rescue mode; exit rescue first",
	},
	statusReady: {ActionRelease: "is ready: there is nothing to release"},
	statusNew:   {ActionRelease: "is new: there is nothing to release"},
}

// Refusal is the error of an action a machine's status does not allow. It
// is a conflict (409) wherever it is shown: API, CLI and web UI alike show
// its message.
type Refusal struct {
	MachineID, Hostname, Status, Action string
	Hint                                string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("machine %s %s", r.Hostname, r.Hint)
}

func refuse(m rackplane.Machine, action string) error {
	hint := refusalHints[m.Status][action]
	if hint == "" {
		hint = fmt.Sprintf("is %s: %s is allowed only when it is %s", m.Status, action, orList(from[action]))
	}
	r := &Refusal{MachineID: m.ID, Hostname: m.Hostname, Status: m.Status, Action: action, Hint: hint}
	return rackplane.WrapError(rackplane.ECONFLICT, r, "%s", r.Error())
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return "never"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// AsRefusal returns the refusal in err's chain, if any.
func AsRefusal(err error) (*Refusal, bool) {
	var r *Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// Command is an action asked of a machine, with what it needs to decide.
type Command interface{ action() string }

// Create makes a machine. Origin is "api" (it starts ready) or
// "discovered" (it starts new).
type Create struct {
	ID, Hostname string
	MACs         []string
	Arch         string
	BootRackID   string
	BootFile     string
	Origin       string
}

// Change edits a machine's descriptive fields; nil fields stay. Boot is
// the boot decision its MACs have now (nil: local boot), which MACs the
// change adds get too.
type Change struct {
	Hostname   *string
	MACs       *[]string
	Arch       *string
	BootRackID *string
	// BootFile is the machine's own boot file ("" clears it).
	BootFile *string
	Boot     *events.BootDecision
}

// Delete removes a machine.
type Delete struct{}

// SetTags replaces a machine's tags with Tags (checked by CheckTags).
type SetTags struct{ Tags []string }

// BootImage is an image version some rack serves, as a deployment or the
// ephemeral environment boots it.
type BootImage struct {
	OS, Release, Arch, Subarch string
	VersionID                  string
	RackID, RackName           string
	BootURL                    string
	Files                      []string
	// Version orders the versions of one image; Online says whether the
	// rack serving it is up.
	Version string
	Online  bool
	// Installer is the version's installer family (events.Installer*;
	// empty is custom), Disk its disk image (on installer agent).
	Installer string
	Disk      *events.DiskImage
}

// PreseedPin is the preseed version a deployment uses.
type PreseedPin struct {
	Name    string
	Version int64
	// Format is the version's format (events.PreseedFormat*), which
	// must fit the image's installer family (PreseedFits).
	Format string
}

// Deploy installs Image on a machine with Preseed (none: zero). A disk
// image (installer agent) is written by the agent of Environment, the
// ephemeral environment on the image's rack, to TargetDisk.
type Deploy struct {
	Image        BootImage
	Preseed      PreseedPin
	KernelParams []string
	Environment  BootImage
	TargetDisk   string
	// NICs are the machine's NICs from its inventory, for the installed
	// system's network-config (a disk image's deployment).
	NICs []events.BootNIC
}

// DiskWritten is the outcome of the agent writing a deployment's disk
// image: on success the machine boots from its disk, where the installed
// system phones home (InstallReport); on failure the deployment fails.
type DiskWritten struct {
	Success bool
	Message string
	// NICs are the machine's NICs from its inventory: the local
	// decisions keep them for the metadata service's network-config.
	NICs []events.BootNIC
}

// Release ends a deployment; the machine boots from its disk and is ready.
// With PowerOff the machine is releasing until the region's power
// lifecycle has switched it off (ReleaseFinished): it is ready only when
// it is off, as an operator who released it expects. With Erase (quick or
// full; "" and none erase nothing) the machine is erasing instead: it
// boots Environment, whose agent erases its disks and powers it off, and
// it is ready only when the agent reports success (EraseReport).
type Release struct {
	PowerOff    bool
	Erase       string
	Environment BootImage
}

// EraseReport is the agent's outcome of erasing the disks.
type EraseReport struct {
	Success bool
	Message string
}

// EraseTimedOut fails an erase whose agent said nothing for Timeout.
type EraseTimedOut struct{ Timeout time.Duration }

// ReleaseFinished ends a release that had work to do: the machine is
// ready, or failed with Message when the work failed.
type ReleaseFinished struct {
	Success bool
	Message string
}

// PowerFailed fails a deployment whose machine could not be powered into
// its installer: nothing will boot it, so waiting for the deployment
// timeout would only hide why.
type PowerFailed struct{ Reason string }

// MarkFailed ends the operation in flight as failed.
type MarkFailed struct{ Reason string }

// MarkBroken takes a machine out of service until MarkFixed.
type MarkBroken struct{ Reason string }

// MarkFixed returns a broken machine to deployed, if it was, else ready.
type MarkFixed struct{}

// Commission boots the machine into Environment, whose agent takes its
// inventory.
type Commission struct{ Environment BootImage }

// CommissioningReport is the agent's outcome of commissioning.
type CommissioningReport struct {
	Success bool
	Message string
}

// CommissionTimedOut fails a commissioning whose agent said nothing for
// Timeout.
type CommissionTimedOut struct{ Timeout time.Duration }

// Rescue boots a machine into Environment so an operator can repair it.
type Rescue struct{ Environment BootImage }

// ExitRescue returns a machine from rescue to the status it had: deployed
// if it was deployed, else failed... as its record says.
type ExitRescue struct{}

// InstallReport is the installer's (or installed system's) outcome of the
// deployment in flight.
type InstallReport struct {
	Success bool
	Message string
}

// DeployTimedOut fails a deployment whose installer said nothing for
// Timeout.
type DeployTimedOut struct{ Timeout time.Duration }

func (Create) action() string              { return actionCreate }
func (Change) action() string              { return ActionUpdate }
func (Delete) action() string              { return ActionDelete }
func (SetTags) action() string             { return ActionSetTags }
func (Deploy) action() string              { return ActionDeploy }
func (Release) action() string             { return ActionRelease }
func (ReleaseFinished) action() string     { return actionReleaseDone }
func (PowerFailed) action() string         { return actionPowerFailed }
func (MarkFailed) action() string          { return ActionMarkFailed }
func (MarkBroken) action() string          { return ActionMarkBroken }
func (MarkFixed) action() string           { return ActionMarkFixed }
func (Commission) action() string          { return ActionCommission }
func (CommissioningReport) action() string { return actionCommissionDone }
func (Rescue) action() string              { return ActionRescue }
func (ExitRescue) action() string          { return ActionExitRescue }
func (InstallReport) action() string       { return actionInstallReport }
func (DeployTimedOut) action() string      { return actionDeployTimeout }
func (CommissionTimedOut) action() string  { return actionCommissionTimeout }
func (EraseReport) action() string         { return actionEraseDone }
func (EraseTimedOut) action() string       { return actionEraseTimeout }
func (DiskWritten) action() string         { return actionDiskWritten }

var (
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)
)

// NormalizeMAC returns mac in the one canonical form the region and the
// racks share (events.CanonicalMAC), or an invalid error for a client.
func NormalizeMAC(mac string) (string, error) {
	c, err := events.CanonicalMAC(strings.TrimSpace(mac))
	if err != nil {
		return "", rackplane.Errorf(rackplane.EINVALID, "%q is not a MAC address such as 52:54:00:12:34:56", mac)
	}
	return c, nil
}

func invalid(format string, args ...any) error {
	return rackplane.Errorf(rackplane.EINVALID, format, args...)
}

// CheckHostname refuses a hostname that is not a DNS label.
func CheckHostname(h string) error {
	if !hostnameRE.MatchString(h) {
		return invalid("hostname %q: want lower-case letters, digits and dashes, at most 63", h)
	}
	return nil
}

// CheckArch refuses what is not an architecture name.
func CheckArch(a string) error {
	if !nameRE.MatchString(a) {
		return invalid("arch %q is not an architecture name such as amd64", a)
	}
	return nil
}

// NormalizeMACs checks a machine's MAC list and returns it canonical,
// without duplicates, in the order given.
func NormalizeMACs(macs []string) ([]string, error) {
	if len(macs) == 0 || len(macs) > 16 {
		return nil, invalid("macs: want 1 to 16 MAC addresses")
	}
	var out []string
	for _, m := range macs {
		n, err := NormalizeMAC(m)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// CheckBootFile refuses a boot file a DHCP reply cannot carry: "" (the
// rack chooses), a file name or path for PXE firmware, or an http(s) URL
// for HTTP boot and iPXE; at most 127 bytes (the reply's file field), no
// spaces or control characters.
func CheckBootFile(f string) error {
	if f == "" {
		return nil
	}
	if len(f) > 127 || strings.ContainsFunc(f, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalid("boot_file %q: want a file name or an http(s) URL of at most 127 bytes, without spaces", f)
	}
	if strings.Contains(f, "://") && !strings.HasPrefix(f, "http://") && !strings.HasPrefix(f, "https://") {
		return invalid("boot_file %q: a URL must be http:// or https://", f)
	}
	return nil
}

// CheckKernelParams refuses kernel parameters that are not one word each.
func CheckKernelParams(params []string) error {
	for _, p := range params {
		if p == "" || len(p) > 256 || strings.ContainsAny(p, " \t\r\n\x00") {
			return invalid("kernel parameter %q: one word each, no spaces", p)
		}
	}
	return nil
}

var (
	kernelNames = []string{"linux", "vmlinuz", "kernel", "boot-kernel"}
	initrdNames = []string{"initrd", "initrd.gz", "initrd.img", "boot-initrd"}
)

// KernelAndInitrd returns the file names of img's kernel and initrd, or a
// conflict when it lacks one.
func KernelAndInitrd(img BootImage) (kernel, initrd string, err error) {
	pick := func(names []string) string {
		for _, n := range names {
			if slices.Contains(img.Files, n) {
				return n
			}
		}
		return ""
	}
	kernel, initrd = pick(kernelNames), pick(initrdNames)
	if kernel == "" || initrd == "" {
		return "", "", rackplane.Errorf(rackplane.ECONFLICT, "image %s on rack %s has no kernel and initrd (files %v)",
			img.VersionID, img.RackName, img.Files)
	}
	return kernel, initrd, nil
}

// ServesPreseed reports whether the machine's installer may fetch its
// pinned preseed now: only while the deployment that pinned it is in
// progress. Once the installer has reported (or the deployment failed or
// was released) the preseed, with the secrets it holds, is served to
// nobody.
func ServesPreseed(m rackplane.Machine) bool {
	return m.PreseedName != "" && m.Status == statusDeploying && m.DeploymentID != nil
}

// Decide returns the events that carry cmd out on m (the zero Machine for
// Create), stamped now, or why it cannot be done: a *Refusal (conflict)
// when m's status does not allow it, an invalid error when cmd itself is
// malformed. No events and no error means there is nothing to do: the
// machine is where the command would take it already.
func Decide(m rackplane.Machine, cmd Command, now time.Time) ([]events.Event, error) {
	d := &decision{m: m, now: now}
	if c, ok := cmd.(Create); ok {
		return d.create(c)
	}
	if !Allowed(m.Status, cmd.action()) {
		switch c := cmd.(type) {
		case InstallReport:
			// Installers retry: a report that was taken already is
			// answered again rather than refused.
			if m.Status == reportStatus(c.Success) {
				return nil, nil
			}
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is %s; a %s report is too late", m.Hostname, m.Status, result(c.Success))
		case CommissioningReport:
			if m.Status == commissionedStatus(c.Success) {
				return nil, nil
			}
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is %s; a commissioning %s report is too late", m.Hostname, m.Status, result(c.Success))
		case EraseReport:
			if m.Status == commissionedStatus(c.Success) {
				return nil, nil
			}
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is %s; an erase %s report is too late", m.Hostname, m.Status, result(c.Success))
		case DiskWritten:
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is %s; the disk image's %s report is too late", m.Hostname, m.Status, result(c.Success))
		case DeployTimedOut, CommissionTimedOut, EraseTimedOut, ReleaseFinished, PowerFailed:
			return nil, nil // the installer reported, or someone acted, meanwhile
		}
		return nil, refuse(m, cmd.action())
	}
	switch c := cmd.(type) {
	case Change:
		return d.change(c)
	case SetTags:
		tags, err := CheckTags(c.Tags)
		if err != nil {
			return nil, err
		}
		if slices.Equal(tags, m.Tags) || len(tags) == 0 && len(m.Tags) == 0 {
			return nil, nil
		}
		d.add(events.TypeMachineTagsSet, events.MachineTags{MachineID: m.ID, Tags: tags})
		return d.out()
	case Delete:
		d.add(events.TypeMachineDeleted, events.MachineRef{MachineID: m.ID})
		d.clear(m.MACs, "machine deleted")
		return d.out()
	case Deploy:
		return d.deploy(c)
	case Release:
		if c.Erase != "" && c.Erase != events.EraseNone {
			return d.erase(c)
		}
		typ := events.TypeMachineReleased
		if c.PowerOff {
			typ = events.TypeMachineReleasing
		}
		d.add(typ, events.MachineRef{MachineID: m.ID})
		d.local(m.MACs)
		return d.out()
	case ReleaseFinished:
		if !c.Success {
			d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID, Reason: reason("the release failed", c.Message)})
			return d.out()
		}
		d.add(events.TypeMachineReleased, events.MachineRef{MachineID: m.ID, Reason: c.Message})
		return d.out()
	case PowerFailed:
		why := c.Reason
		if m.Status == statusErasing {
			why = reason("erasing the disks failed", c.Reason)
		}
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID, Reason: why})
		return d.out()
	case EraseReport:
		// A failed erase keeps its boot decision: booted again, the
		// machine erases again rather than start what is on its disks.
		return d.outcome(c.Success, events.TypeMachineReleased, reason("the disks were erased", c.Message),
			reason("erasing the disks failed", c.Message))
	case EraseTimedOut:
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID,
			Reason: fmt.Sprintf("erasing the disks failed: the agent did not report within the erase timeout of %s", c.Timeout)})
		return d.out()
	case MarkFailed:
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID, Reason: c.Reason})
		return d.out()
	case MarkBroken:
		d.add(events.TypeMachineBroken, events.MachineRef{MachineID: m.ID, Reason: c.Reason})
		// A broken machine must not install or commission on its next
		// boot: it boots from its disk until it is fixed.
		d.local(m.MACs)
		return d.out()
	case MarkFixed:
		d.add(events.TypeMachineFixed, events.MachineRef{MachineID: m.ID})
		return d.out()
	case Commission:
		d.add(events.TypeMachineCommissioning, events.MachineRef{MachineID: m.ID})
		return d.ephemeral(c.Environment, events.BootPurposeCommission)
	case CommissioningReport:
		return d.outcome(c.Success, events.TypeMachineCommissioned, c.Message, reason("commissioning failed", c.Message))
	case Rescue:
		d.add(events.TypeMachineRescueEntered, events.MachineRef{MachineID: m.ID})
		return d.ephemeral(c.Environment, events.BootPurposeRescue)
	case ExitRescue:
		d.add(events.TypeMachineRescueExited, events.MachineRef{MachineID: m.ID})
		d.local(m.MACs)
		return d.out()
	case InstallReport:
		// The machine boots from its disk from now on, so a reboot into
		// the installed system does not PXE-boot the installer again.
		return d.outcome(c.Success, events.TypeMachineDeployed, reason("the installer reported success", c.Message),
			reason("the installer reported failure", c.Message))
	case DiskWritten:
		if !c.Success {
			d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID, Reason: reason("writing the disk image failed", c.Message)})
			return d.out()
		}
		// The machine boots its disk from now on (the rack did so
		// already); the decisions keep the deployment, whose metadata
		// the rack serves until the installed system phones home.
		for _, b := range events.LocalBoot(m.ID, m.Hostname, m.Arch, m.MACs) {
			if m.DeploymentID != nil {
				b.DeploymentID = *m.DeploymentID
			}
			b.DiskImage, b.NICs = m.ImageVersionID, c.NICs
			d.add(events.TypeBootDecisionSet, b)
		}
		return d.out()
	case DeployTimedOut:
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID,
			Reason: fmt.Sprintf("the installer did not report within the deployment timeout of %s", c.Timeout)})
		return d.out()
	case CommissionTimedOut:
		// As after a failed deployment, the machine keeps its boot
		// decision until the operator's next action sets it anew.
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: m.ID,
			Reason: fmt.Sprintf("the commissioning agent did not report within the commissioning timeout of %s", c.Timeout)})
		return d.out()
	}
	return nil, fmt.Errorf("machine: unknown command %T", cmd)
}

func reportStatus(success bool) string {
	if success {
		return statusDeployed
	}
	return statusFailed
}

func commissionedStatus(success bool) string {
	if success {
		return statusReady
	}
	return statusFailed
}

func result(success bool) string {
	if success {
		return "success"
	}
	return "failure"
}

func reason(what, message string) string {
	if message == "" {
		return what
	}
	r := what + ": " + message
	if len(r) <= maxReason {
		return r
	}
	// A message is bounded on its own (an agent's to
	// events.MaxAgentMessage), not with what goes before it: keep its
	// start, which says what failed, and its end, which says why.
	const gap = " … "
	keep := maxReason - len(what) - 2 - len(gap)
	head := strings.ToValidUTF8(message[:keep/4], "")
	tail := message[len(message)-(keep-len(head)):]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return what + ": " + head + gap + tail
}

// maxReason bounds a status reason in bytes (the schemas of the status
// events bound it to 1024 characters).
const maxReason = 1024

// StatusAfter returns the status event type typ leaves a machine in, and
// whether it changes the status at all; the projection applies it, so the
// lifecycle and what the API shows cannot disagree.
func StatusAfter(m rackplane.Machine, typ string) (string, bool) {
	switch typ {
	case events.TypeMachineDeploying:
		return statusDeploying, true
	case events.TypeMachineDeployed:
		return statusDeployed, true
	case events.TypeMachineFailed:
		return statusFailed, true
	case events.TypeMachineReleased, events.TypeMachineCommissioned:
		return statusReady, true
	case events.TypeMachineReleasing:
		return statusReleasing, true
	case events.TypeMachineCommissioning:
		return statusCommissioning, true
	case events.TypeMachineErasing:
		return statusErasing, true
	case events.TypeMachineBroken:
		return statusBroken, true
	case events.TypeMachineRescueEntered:
		return statusRescue, true
	case events.TypeMachineFixed, events.TypeMachineRescueExited:
		if m.DeployedAt != nil {
			return statusDeployed, true
		}
		return statusReady, true
	}
	return "", false
}

// changes are the event types that change a machine, and so its version
// (its ETag). Racks report boots and transfers on the machine's stream and
// the region records preseed fetches there, but those observe the machine:
// counting them would fail an operator's If-Match whenever the machine
// happened to be booting.
//
// Tags count: they are the operator's own data on the machine, shown in
// the machine the ETag stands for, and PUT .../tags replaces them whole,
// so two operators each adding a tag by read, change and write lose one
// unless If-Match can tell the second that the first wrote. Tag changes
// are rare operator acts, so the cost (an If-Match taken before a tag
// change fails after it) falls where someone is at work. Hardware reports do not
// count: they observe the machine, as boots do, and a commissioning that
// reports while an operator edits the machine must not fail the edit.
var changes = map[string]bool{
	events.TypeMachineCreated: true, events.TypeMachineUpdated: true, events.TypeMachineDeleted: true,
	events.TypeMachineDeploying: true, events.TypeMachineDeployed: true, events.TypeMachineFailed: true,
	events.TypeMachineReleased: true, events.TypeMachineReleasing: true, events.TypeMachineCommissioning: true,
	events.TypeMachineCommissioned: true, events.TypeMachineBroken: true, events.TypeMachineFixed: true,
	events.TypeMachineRescueEntered: true, events.TypeMachineRescueExited: true, events.TypeMachineErasing: true,
	events.TypeBootDecisionSet: true, events.TypeBootDecisionCleared: true,
	events.TypeMachineTagsSet: true,
}

// BootRack is the rack that serves m's boot decisions: the one it deploys
// from while it has one, else its boot rack; "" when neither is known (its
// decisions then reach no rack until one asks for them, MethodBootDecision).
func BootRack(m rackplane.Machine) string {
	for _, id := range []*string{m.DeployRackID, m.BootRackID} {
		if id != nil && *id != "" {
			return *id
		}
	}
	return ""
}

// IsChange reports whether a region event of type typ on a machine's
// stream changes the machine.
func IsChange(typ string) bool { return changes[typ] }

// decision collects the events of one command.
type decision struct {
	m   rackplane.Machine
	now time.Time
	evs []events.Event
	err error
}

func (d *decision) add(typ string, data any) {
	if d.err != nil {
		return
	}
	switch b := data.(type) {
	case events.BootDecision:
		// Whatever the machine boots, its firmware's quirk stays.
		b.BootFile = d.m.BootFile
		if b.RackID == "" {
			b.RackID = BootRack(d.m)
		}
		data = b
	case events.BootDecisionCleared:
		if b.RackID == "" {
			b.RackID = BootRack(d.m)
		}
		data = b
	}
	ev, err := events.New(events.RegionSource, typ, events.MachineStreamName(d.m.ID), d.now, data)
	if err != nil {
		d.err = err
		return
	}
	if len(d.evs) > 0 {
		// Boot decisions follow from the change that comes first.
		ev = ev.CausedBy(d.evs[0])
	}
	d.evs = append(d.evs, ev)
}

func (d *decision) out() ([]events.Event, error) {
	if d.err != nil {
		return nil, d.err
	}
	return d.evs, nil
}

// outcome is an installer's or agent's outcome: success emits typ with
// okWhy and boots the machine from its disk; failure fails it with
// failWhy, its boot decision left as it is.
func (d *decision) outcome(success bool, typ, okWhy, failWhy string) ([]events.Event, error) {
	if !success {
		d.add(events.TypeMachineFailed, events.MachineRef{MachineID: d.m.ID, Reason: failWhy})
		return d.out()
	}
	d.add(typ, events.MachineRef{MachineID: d.m.ID, Reason: okWhy})
	d.local(d.m.MACs)
	return d.out()
}

func (d *decision) local(macs []string) {
	for _, b := range events.LocalBoot(d.m.ID, d.m.Hostname, d.m.Arch, macs) {
		d.add(events.TypeBootDecisionSet, b)
	}
}

func (d *decision) clear(macs []string, why string) {
	for _, mac := range macs {
		d.add(events.TypeBootDecisionCleared, events.BootDecisionCleared{MAC: mac, MachineID: d.m.ID, Reason: why})
	}
}

func (d *decision) create(c Create) ([]events.Event, error) {
	if c.ID == "" {
		return nil, invalid("a machine needs an id")
	}
	if err := CheckHostname(c.Hostname); err != nil {
		return nil, err
	}
	macs, err := NormalizeMACs(c.MACs)
	if err != nil {
		return nil, err
	}
	if c.Arch == "" {
		c.Arch = "amd64"
	}
	if err := CheckArch(c.Arch); err != nil {
		return nil, err
	}
	if err := CheckBootFile(c.BootFile); err != nil {
		return nil, err
	}
	st := events.MachineState{MachineID: c.ID, Hostname: c.Hostname, MACs: macs, Arch: c.Arch, BootRackID: c.BootRackID,
		BootFile: c.BootFile, Origin: c.Origin, Status: statusReady}
	if c.Origin == "discovered" {
		// Nobody has looked at a machine that just turned up.
		st.Status = statusNew
	}
	d.m = rackplane.Machine{ID: c.ID, Hostname: c.Hostname, MACs: macs, Arch: c.Arch, BootFile: c.BootFile}
	if c.BootRackID != "" {
		d.m.BootRackID = &c.BootRackID
	}
	d.add(events.TypeMachineCreated, st)
	d.local(macs)
	return d.out()
}

// State returns the descriptive fields of m as its events carry them.
func State(m rackplane.Machine) events.MachineState {
	st := events.MachineState{MachineID: m.ID, Hostname: m.Hostname, MACs: m.MACs, Arch: m.Arch, BootFile: m.BootFile}
	if m.BootRackID != nil {
		st.BootRackID = *m.BootRackID
	}
	return st
}

func (d *decision) change(c Change) ([]events.Event, error) {
	before := State(d.m)
	after := before
	if c.Hostname != nil {
		if err := CheckHostname(*c.Hostname); err != nil {
			return nil, err
		}
		after.Hostname = *c.Hostname
	}
	if c.MACs != nil {
		macs, err := NormalizeMACs(*c.MACs)
		if err != nil {
			return nil, err
		}
		after.MACs = macs
	}
	if c.Arch != nil {
		if err := CheckArch(*c.Arch); err != nil {
			return nil, err
		}
		after.Arch = *c.Arch
	}
	if c.BootRackID != nil {
		after.BootRackID = *c.BootRackID
	}
	if c.BootFile != nil {
		if err := CheckBootFile(*c.BootFile); err != nil {
			return nil, err
		}
		after.BootFile = *c.BootFile
	}
	d.m.BootFile = after.BootFile // the decisions below carry the new one
	d.add(events.TypeMachineUpdated, after)
	if after.BootRackID != before.BootRackID {
		// The rack the machine leaves forgets it; the decisions below go
		// to the one it joins.
		old := BootRack(d.m)
		d.m.BootRackID = &after.BootRackID
		if now := BootRack(d.m); old != "" && old != now {
			for _, mac := range before.MACs {
				d.add(events.TypeBootDecisionCleared, events.BootDecisionCleared{MAC: mac, MachineID: d.m.ID,
					Reason: "machine moved to another rack", RackID: old})
			}
		}
	}
	// MACs that left the machine are forgotten by the racks; new ones
	// boot as the machine's others do.
	var gone []string
	for _, mac := range before.MACs {
		if !slices.Contains(after.MACs, mac) {
			gone = append(gone, mac)
		}
	}
	d.clear(gone, "MAC removed from the machine")
	for _, mac := range after.MACs {
		b := events.BootDecision{MAC: mac, MachineID: d.m.ID, Purpose: events.BootPurposeLocal}
		if c.Boot != nil {
			b = *c.Boot
			b.MAC = mac
			b.RackID = "" // the rack the machine has now (add)
		}
		b.Hostname, b.Arch = after.Hostname, after.Arch
		d.add(events.TypeBootDecisionSet, b)
	}
	return d.out()
}

func (d *decision) deploy(c Deploy) ([]events.Event, error) {
	if err := CheckKernelParams(c.KernelParams); err != nil {
		return nil, err
	}
	if err := checkPreseedFits(c.Image, c.Preseed); err != nil {
		return nil, err
	}
	if c.Image.Installer == events.InstallerAgent {
		return d.deployDisk(c)
	}
	kernel, initrd, err := KernelAndInitrd(c.Image)
	if err != nil {
		return nil, err
	}
	m, img := d.m, c.Image
	d.add(events.TypeMachineDeploying, events.Deployment{MachineID: m.ID, OS: img.OS, Release: img.Release, Arch: img.Arch,
		Subarch: img.Subarch, ImageVersionID: img.VersionID, RackID: img.RackID,
		PreseedName: c.Preseed.Name, PreseedVersion: c.Preseed.Version})
	if d.err != nil {
		return nil, d.err
	}
	// The deploying event's id names the deployment (the projection keeps
	// it as deployment_id): the rack derives the machine's credential
	// from it.
	deployment := d.evs[len(d.evs)-1].ID
	params := append([]string{"rackplane.machine=" + m.ID, "rackplane.hostname=" + m.Hostname}, c.KernelParams...)
	for _, mac := range m.MACs {
		b := events.BootDecision{MAC: mac, MachineID: m.ID, Hostname: m.Hostname, Purpose: events.BootPurposeInstall,
			Arch: img.Arch, Kernel: img.VersionID + "/" + kernel, Initrd: img.VersionID + "/" + initrd,
			ImageVer: img.VersionID, Params: params, RackID: img.RackID, DeploymentID: deployment, Installer: img.Installer}
		if c.Preseed.Name != "" {
			b.PreseedURL = strings.TrimRight(img.BootURL, "/") + "/preseed/" + m.ID
		}
		d.add(events.TypeBootDecisionSet, b)
	}
	return d.out()
}

// deployDisk deploys a disk image: the machine boots the ephemeral
// environment with purpose deploy, whose agent writes the image to the
// target disk and reboots it into the installed system, which phones
// home through the rack's metadata service.
func (d *decision) deployDisk(c Deploy) ([]events.Event, error) {
	img, env := c.Image, c.Environment
	switch {
	case img.Disk == nil:
		return nil, rackplane.Errorf(rackplane.ECONFLICT, "image %s on rack %s is a disk image without its description", img.VersionID, img.RackName)
	case c.TargetDisk == "":
		return nil, invalid("a disk image needs the disk it is written to")
	case env.RackID != img.RackID:
		return nil, rackplane.Errorf(rackplane.ECONFLICT, "the ephemeral environment %s is on rack %s, the disk image %s on rack %s: "+
			"both must be on the rack the machine boots from", env.VersionID, env.RackName, img.VersionID, img.RackName)
	}
	if _, _, err := KernelAndInitrd(env); err != nil {
		return nil, err
	}
	m := d.m
	d.add(events.TypeMachineDeploying, events.Deployment{MachineID: m.ID, OS: img.OS, Release: img.Release, Arch: img.Arch,
		Subarch: img.Subarch, ImageVersionID: img.VersionID, RackID: img.RackID,
		PreseedName: c.Preseed.Name, PreseedVersion: c.Preseed.Version})
	return d.ephemeralBoot(env, events.BootPurposeDeploy, func(b *events.BootDecision) {
		b.DiskImage, b.TargetDisk, b.Installer, b.NICs = img.VersionID, c.TargetDisk, img.Installer, c.NICs
	}, c.KernelParams...)
}

// CheckErase refuses what is not an erase mode ("" is none).
func CheckErase(mode string) error {
	if mode != "" && !slices.Contains(events.EraseModes, mode) {
		return invalid("erase %q: want %s", mode, orList(events.EraseModes))
	}
	return nil
}

// erase starts a release that erases the disks: the machine is erasing
// and boots the ephemeral environment with the erase purpose.
func (d *decision) erase(c Release) ([]events.Event, error) {
	if err := CheckErase(c.Erase); err != nil {
		return nil, err
	}
	if _, _, err := KernelAndInitrd(c.Environment); err != nil {
		return nil, err
	}
	d.add(events.TypeMachineErasing, events.MachineRef{MachineID: d.m.ID})
	return d.ephemeral(c.Environment, events.BootPurposeErase, "rackplane.erase="+c.Erase)
}

// ephemeral boots the machine's MACs into the ephemeral environment for
// purpose, with params after the environment's own.
func (d *decision) ephemeral(env BootImage, purpose string, params ...string) ([]events.Event, error) {
	return d.ephemeralBoot(env, purpose, nil, params...)
}

// ephemeralBoot is ephemeral with amend, when not nil, called on each
// decision before it is added.
func (d *decision) ephemeralBoot(env BootImage, purpose string, amend func(*events.BootDecision), params ...string) ([]events.Event, error) {
	kernel, initrd, err := KernelAndInitrd(env)
	if err != nil {
		return nil, err
	}
	m := d.m
	if d.err != nil {
		return nil, d.err
	}
	// The event that started the operation (machine_commissioning,
	// rescue_entered) names it, as machine_deploying names a deployment:
	// the rack derives the credential of the boot's agent from it.
	operation := d.evs[len(d.evs)-1].ID
	for _, mac := range m.MACs {
		b := events.BootDecision{MAC: mac, MachineID: m.ID, Hostname: m.Hostname,
			Purpose: purpose, Arch: m.Arch, Kernel: env.VersionID + "/" + kernel, Initrd: env.VersionID + "/" + initrd,
			ImageVer: env.VersionID, Params: append([]string{"rackplane.machine=" + m.ID, "rackplane.purpose=" + purpose}, params...),
			// The rack that has the environment serves the boot, as a
			// deployment's rack does ("": the machine's rack).
			RackID: env.RackID, DeploymentID: operation}
		if amend != nil {
			amend(&b)
		}
		d.add(events.TypeBootDecisionSet, b)
	}
	return d.out()
}
