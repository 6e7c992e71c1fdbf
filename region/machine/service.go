package machine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

// ErrChanged is what Store.Append returns when the machine is no longer at
// the version expected: someone changed it since it was read.
var ErrChanged = errors.New("machine changed meanwhile")

// ErrMovedOn is the answer to an outcome for an operation the machine is
// no longer in (another deployment started meanwhile): nothing changed.
var ErrMovedOn = errors.New("the machine has moved on to another operation")

// Store is what the lifecycle needs of the region's database. The region's
// postgres package implements it.
type Store interface {
	GetMachine(ctx context.Context, id string) (rackplane.Machine, error)
	MachineByMAC(ctx context.Context, mac string) (rackplane.Machine, error)
	ListMachines(ctx context.Context, f Filter) ([]rackplane.Machine, error)
	OverdueDeployments(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error)
	// OverdueCommissionings lists the machines still commissioning whose
	// commissioning began before before, oldest first.
	OverdueCommissionings(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error)
	// OverdueErasings lists the machines still erasing whose erase began
	// before before, oldest first.
	OverdueErasings(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error)
	// BootDecision is nil when the MAC has none.
	BootDecision(ctx context.Context, mac string) (*events.BootDecision, error)
	RackExists(ctx context.Context, id string) (bool, error)
	// BootImages lists every version of os/release/arch racks reported.
	BootImages(ctx context.Context, os, release, arch string) ([]BootImage, error)
	// Preseed pins the current version of a named preseed; PreseedFor
	// that of the most specific one matching the machine. ENOTFOUND when
	// there is none.
	PreseedPin(ctx context.Context, name string) (PreseedPin, error)
	PreseedPinFor(ctx context.Context, machineID, os, release, arch string) (PreseedPin, error)
	// Inventory is the machine's latest hardware inventory, nil when it
	// was never commissioned.
	Inventory(ctx context.Context, machineID string) (*events.Inventory, error)
	VolumeCount(ctx context.Context, machineID string) (int, error)
	// AppendMachine appends evs to the machine's stream in one
	// transaction if the machine is at version expected (NoMachine:
	// creates it), else returns an error wrapping ErrChanged.
	AppendMachine(ctx context.Context, id string, expected int64, evs []events.Event) error
	// AppendDiscovered creates machine id, discovered on rack rackID,
	// with evs as AppendMachine does, unless lim refuses it: with
	// PerRackPerMinute machines or more discovered on that rack since
	// since, or MaxNew discovered machines still new, it appends nothing
	// and returns a *DiscoveryCapped. The count and the append are one
	// transaction, serialised with every other discovery, so the caps
	// hold with several region instances.
	AppendDiscovered(ctx context.Context, id, rackID string, since time.Time, lim DiscoveryLimits, evs []events.Event) error
	// HasPowerParameters reports whether the machine has power
	// parameters: whether the region can switch it off itself.
	HasPowerParameters(ctx context.Context, id string) (bool, error)
}

// DiscoveryLimits cap the machines the region makes of boots of MACs
// nobody knows. A boot request is unauthenticated: without a cap, packets
// with random MACs make as many machines.
type DiscoveryLimits struct {
	// PerRackPerMinute caps the machines discovered on one rack in any
	// minute (0: no cap).
	PerRackPerMinute int
	// MaxNew caps the discovered machines still new (never commissioned,
	// deployed or deleted), across racks (0: no cap): an operator accepts
	// or deletes them before more are made. A discovered machine
	// commissioning, or failed without an inventory, counts as new: with
	// auto-commission none stays new for more than a moment.
	MaxNew int
}

// Limits of discovery, in DiscoveryCapped.Limit.
const (
	LimitRackRate = "rack_rate" // PerRackPerMinute
	LimitNew      = "new"       // MaxNew
)

// DiscoveryCapped is Discover's refusal: a cap of DiscoveryLimits was
// reached, and no machine was made.
type DiscoveryCapped struct {
	Limit string // LimitRackRate or LimitNew
	Cap   int
}

func (e *DiscoveryCapped) Error() string {
	if e.Limit == LimitRackRate {
		return fmt.Sprintf("discovery capped: %d machines discovered on this rack in the last minute", e.Cap)
	}
	return fmt.Sprintf("discovery capped: %d discovered machines are still new", e.Cap)
}

// NoMachine is the expected version of a machine that does not exist yet.
const NoMachine = -1

// Meta says who asked for a change and why; it goes on every event.
type Meta struct {
	Actor         string
	CorrelationID string
	// Cause is the event the change reacts to, if any.
	Cause *events.Event
	// IfMatch, when set, is the version the caller read: the change
	// applies only to that version (else EPRECONDITION), and is not
	// retried on a fresh read.
	IfMatch *int64
}

// Service carries commands out: it reads the machine, asks Decide, and
// appends what Decide returns, all or nothing, at the version it read. A
// machine changed meanwhile is read again and decided afresh.
type Service struct {
	store Store
	now   func() time.Time
	log   *slog.Logger
	// releasePowerOff is whether a release switches off a machine that
	// has power parameters unless the request says otherwise.
	releasePowerOff bool
	// autoCommission is whether Discover commissions the machine it
	// makes (SetAutoCommission).
	autoCommission bool

	// releaseErase is how a release erases the disks unless the request
	// says otherwise (events.EraseNone, quick, full).
	releaseErase string
}

// NewService returns a service on store. now may be nil (time.Now).
func NewService(store Store, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, now: now, log: log, releasePowerOff: true, releaseErase: events.EraseNone}
}

// SetReleasePowerOff says whether a release switches off a machine with
// power parameters when the request does not say (default true); call it
// before the service is used.
func (s *Service) SetReleasePowerOff(on bool) { s.releasePowerOff = on }

// SetAutoCommission says whether a machine Discover makes is commissioned
// at once. Call it before the service is used.
func (s *Service) SetAutoCommission(on bool) { s.autoCommission = on }

// SetReleaseErase sets how a release erases the disks when the request
// does not say (default events.EraseNone); call it before the service is
// used.
func (s *Service) SetReleaseErase(mode string) { s.releaseErase = mode }

// withActions fills in what a client may do with the machine now.
func withActions(m rackplane.Machine) rackplane.Machine {
	m.Actions = Actions(m.Status)
	return m
}

// Get returns a machine; ENOTFOUND when there is none.
func (s *Service) Get(ctx context.Context, id string) (rackplane.Machine, error) {
	m, err := s.store.GetMachine(ctx, id)
	return withActions(m), err
}

// List returns machines by hostname after f.After. An unknown status is
// invalid rather than an empty page.
func (s *Service) List(ctx context.Context, f Filter) ([]rackplane.Machine, error) {
	if f.Status != "" && !known(f.Status) {
		return nil, invalid("status %q: want one of %s", f.Status, strings.Join(events.MachineStatuses, ", "))
	}
	if f.MAC != "" {
		mac, err := NormalizeMAC(f.MAC)
		if err != nil {
			return nil, err
		}
		f.MAC = mac
	}
	ms, err := s.store.ListMachines(ctx, f)
	for i := range ms {
		ms[i].Actions = Actions(ms[i].Status)
	}
	return ms, err
}

func known(status string) bool { return slices.Contains(events.MachineStatuses, status) }

// Result is a machine before and after a change.
type Result struct {
	Before, After rackplane.Machine
	// Changed is false when the machine was where the command would take
	// it already.
	Changed bool
}

// CreateRequest is a new machine's fields.
type CreateRequest struct {
	Hostname   string
	MACs       []string
	Arch       string
	BootRackID string
	BootFile   string
}

// Create makes a machine as an operator asks.
func (s *Service) Create(ctx context.Context, req CreateRequest, meta Meta) (rackplane.Machine, error) {
	rackID, err := s.bootRack(ctx, req.BootRackID)
	if err != nil {
		return rackplane.Machine{}, err
	}
	cmd := Create{ID: uuid.NewString(), Hostname: req.Hostname, MACs: req.MACs, Arch: req.Arch, BootRackID: rackID,
		BootFile: req.BootFile, Origin: "api"}
	evs, err := Decide(rackplane.Machine{}, cmd, s.now())
	if err != nil {
		return rackplane.Machine{}, err
	}
	var st events.MachineState
	if err := evs[0].DecodeData(&st); err != nil {
		return rackplane.Machine{}, err
	}
	if err := s.macsFree(ctx, st.MACs, ""); err != nil {
		return rackplane.Machine{}, err
	}
	if err := s.store.AppendMachine(ctx, cmd.ID, NoMachine, stamp(evs, meta)); err != nil {
		return rackplane.Machine{}, err
	}
	return s.Get(ctx, cmd.ID)
}

// discoveredNamespace makes a discovered machine's id a function of its
// MAC, so two region instances discovering it at once make one machine.
var discoveredNamespace = uuid.MustParse("6b0f7e9c-1d2a-4c3b-9e8f-7a6b5c4d3e2f")

// Discover makes a machine, status new, for a MAC that asked rack rackID
// for its boot config and that no machine has, unless lim refuses it (an
// error that is a *DiscoveryCapped). It reports whether it made one.
func (s *Service) Discover(ctx context.Context, mac, rackID string, lim DiscoveryLimits, meta Meta) (bool, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return false, err
	}
	if _, err := s.store.MachineByMAC(ctx, mac); err == nil {
		return false, nil
	} else if rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		return false, err
	}
	id := uuid.NewSHA1(discoveredNamespace, []byte(mac)).String()
	evs, err := Decide(rackplane.Machine{}, Create{ID: id, Hostname: "node-" + strings.ReplaceAll(mac, ":", ""),
		MACs: []string{mac}, Arch: "amd64", BootRackID: rackID, Origin: "discovered"}, s.now())
	if err != nil {
		return false, err
	}
	err = s.store.AppendDiscovered(ctx, id, rackID, s.now().Add(-time.Minute), lim, stamp(evs, meta))
	switch {
	case errors.Is(err, ErrChanged), rackplane.ErrorCode(err) == rackplane.ECONFLICT:
		return false, nil // discovered already, by another region or an earlier event
	case err != nil:
		return false, err
	}
	s.log.Info("machine discovered", "machine_id", id, "mac", mac, "rack_id", rackID)
	if s.autoCommission {
		s.commissionDiscovered(ctx, id, meta)
	}
	return true, nil
}

// commissionDiscovered commissions a machine Discover made. The machine
// is made whatever happens here: without an ephemeral environment for
// it, it stays new (the operator imports one and commissions it), and a
// failure is logged, never turned into the discovery's.
func (s *Service) commissionDiscovered(ctx context.Context, id string, meta Meta) {
	_, err := s.Commission(ctx, id, meta)
	switch {
	case err == nil:
		s.log.Info("discovered machine commissioning", "machine_id", id)
	case rackplane.ErrorCode(err) == rackplane.ECONFLICT:
		s.log.Warn("discovered machine left new", "machine_id", id, "reason", rackplane.ErrorMessage(err))
	default:
		s.log.Error("discovered machine not commissioned", "machine_id", id, "err", err)
	}
}

// AdoptBootRack makes rack rackID the boot rack of machine id if it has
// none yet: that rack asked for the machine's boot decision, so the machine
// boots on its network. From then on the machine's decisions go to that
// rack alone (racks hear only their own machines' decisions); an operator
// moves it with Update. A machine with a rack already keeps it.
func (s *Service) AdoptBootRack(ctx context.Context, id, rackID string) (rackplane.Machine, error) {
	m, err := s.Get(ctx, id)
	if err != nil || BootRack(m) != "" {
		return m, err
	}
	res, err := s.Update(ctx, id, Change{BootRackID: &rackID}, Meta{Actor: "rack:" + rackID})
	if err != nil {
		return m, err
	}
	s.log.Info("machine adopted by the rack it boots on", "machine_id", id, "rack_id", rackID)
	return res.After, nil
}

// Update changes a machine's descriptive fields.
func (s *Service) Update(ctx context.Context, id string, c Change, meta Meta) (Result, error) {
	return s.execute(ctx, id, ActionUpdate, meta, func(m rackplane.Machine) (Command, error) {
		if c.BootRackID != nil {
			rackID, err := s.bootRack(ctx, *c.BootRackID)
			if err != nil {
				return nil, err
			}
			c.BootRackID = &rackID
		}
		if c.MACs != nil {
			macs, err := NormalizeMACs(*c.MACs)
			if err != nil {
				return nil, err
			}
			if err := s.macsFree(ctx, macs, m.ID); err != nil {
				return nil, err
			}
		}
		c.Boot = nil
		if len(m.MACs) > 0 {
			b, err := s.store.BootDecision(ctx, m.MACs[0])
			if err != nil {
				return nil, err
			}
			c.Boot = b
		}
		return c, nil
	})
}

// SetTags replaces a machine's tags; an invalid error names every tag
// that is no tag name. The same tags again change nothing.
func (s *Service) SetTags(ctx context.Context, id string, tags []string, meta Meta) (Result, error) {
	if _, err := CheckTags(tags); err != nil {
		return Result{}, err
	}
	return s.command(ctx, id, SetTags{Tags: tags}, meta)
}

// Delete removes a machine that holds no volumes.
func (s *Service) Delete(ctx context.Context, id string, meta Meta) (Result, error) {
	return s.execute(ctx, id, ActionDelete, meta, func(m rackplane.Machine) (Command, error) {
		// A volume names its machine; deleting the machine first would
		// leave storage nobody can map back to an owner.
		n, err := s.store.VolumeCount(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s still has %d volume(s); remove them first", m.Hostname, n)
		}
		return Delete{}, nil
	})
}

// DeployRequest says what to install.
type DeployRequest struct {
	OS, Release, Arch, Subarch string
	// Preseed names the preseed; empty: the most specific one that
	// matches, or none.
	Preseed      string
	KernelParams []string
	// Disk, for a disk image (installer agent), is the disk it is
	// written to: a name, serial or by-id path of the machine's
	// inventory; empty: the largest disk.
	Disk string
}

// Deploy installs an OS: the newest image of it on an online rack that
// reaches the machine, with the current version of its preseed pinned.
func (s *Service) Deploy(ctx context.Context, id string, req DeployRequest, meta Meta) (Result, error) {
	if req.OS == "" || req.Release == "" {
		return Result{}, invalid("os and release are required: a deployment says what it installs")
	}
	if req.OS == EphemeralOS && req.Release == EphemeralRelease {
		// It would boot, report an inventory nobody asked for and power
		// off, leaving the machine deploying until the timeout.
		return Result{}, invalid("os %s release %s is the ephemeral environment that commissions machines, not an operating system to deploy: "+
			"commission the machine instead, or deploy an operating system", EphemeralOS, EphemeralRelease)
	}
	if err := CheckKernelParams(req.KernelParams); err != nil {
		return Result{}, err
	}
	return s.execute(ctx, id, ActionDeploy, meta, func(m rackplane.Machine) (Command, error) {
		if req.Arch == "" {
			req.Arch = m.Arch
		}
		offers, err := s.store.BootImages(ctx, req.OS, req.Release, req.Arch)
		if err != nil {
			return nil, err
		}
		img, err := ChooseImage(m, offers, req)
		if err != nil {
			return nil, err
		}
		cmd := Deploy{Image: img, KernelParams: req.KernelParams}
		if img.Installer == events.InstallerAgent {
			// The ephemeral environment's agent writes the image: it
			// boots from the rack that has the image, which serves both.
			if cmd.Environment, err = s.environmentOn(ctx, m, img.RackID, "deployed with a disk image"); err != nil {
				return nil, err
			}
			inv, err := s.store.Inventory(ctx, m.ID)
			if err != nil {
				return nil, err
			}
			if cmd.TargetDisk, err = TargetDisk(m, inv, req.Disk); err != nil {
				return nil, err
			}
			cmd.NICs = events.BootNICs(inv)
		} else if req.Disk != "" {
			return nil, invalid("disk %q: only a disk image (installer agent) is written to a disk the deployment names; "+
				"%s/%s is installed by its installer (%s)", req.Disk, img.OS, img.Release, cmp.Or(img.Installer, events.InstallerCustom))
		}
		if req.Preseed != "" {
			cmd.Preseed, err = s.store.PreseedPin(ctx, req.Preseed)
		} else {
			cmd.Preseed, err = s.store.PreseedPinFor(ctx, m.ID, req.OS, req.Release, req.Arch)
			if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
				err = nil // a deployment without a preseed
			}
		}
		return cmd, err
	})
}

// The ephemeral environment is imported into a rack like any image; the
// region knows it by the names its manifest gives it: os EphemeralOS,
// release EphemeralRelease, for the machine's arch (the manifest's
// version id reads rackplane/<arch>/<subarch>/ephemeral/<label>/<version>).
const (
	EphemeralOS      = "rackplane"
	EphemeralRelease = "ephemeral"
)

// Commission boots the machine into the ephemeral environment, whose
// agent takes its inventory and reports to the rack: the newest
// environment for the machine's arch on an online rack that reaches the
// machine, chosen as Deploy chooses an image. Without one it is a
// conflict that says how to import one.
func (s *Service) Commission(ctx context.Context, id string, meta Meta) (Result, error) {
	return s.execute(ctx, id, ActionCommission, meta, func(m rackplane.Machine) (Command, error) {
		env, err := s.environment(ctx, m, "commissioned")
		if err != nil {
			return nil, err
		}
		return Commission{Environment: env}, nil
	})
}

// environment chooses the ephemeral environment m boots for an operation
// (done: what it would be, for the conflict without one).
func (s *Service) environment(ctx context.Context, m rackplane.Machine, done string) (BootImage, error) {
	offers, err := s.store.BootImages(ctx, EphemeralOS, EphemeralRelease, m.Arch)
	if err != nil {
		return BootImage{}, err
	}
	if len(offers) == 0 {
		return BootImage{}, rackplane.Errorf(rackplane.ECONFLICT, "machine %s cannot be %s: no rack has the ephemeral "+
			"environment for %s; import one (os %s, release %s, arch %s) into the machine's rack with "+
			"rackplane images import RACK SOURCE", m.Hostname, done, m.Arch, EphemeralOS, EphemeralRelease, m.Arch)
	}
	return ChooseImage(m, offers, DeployRequest{OS: EphemeralOS, Release: EphemeralRelease, Arch: m.Arch})
}

// environmentOn chooses the ephemeral environment m boots from rack
// rackID, as environment does.
func (s *Service) environmentOn(ctx context.Context, m rackplane.Machine, rackID, done string) (BootImage, error) {
	offers, err := s.store.BootImages(ctx, EphemeralOS, EphemeralRelease, m.Arch)
	if err != nil {
		return BootImage{}, err
	}
	offers = slices.DeleteFunc(offers, func(i BootImage) bool { return i.RackID != rackID })
	if len(offers) == 0 {
		return BootImage{}, rackplane.Errorf(rackplane.ECONFLICT, "machine %s cannot be %s: the rack that has the image has no "+
			"ephemeral environment for %s, whose agent writes it; import one (os %s, release %s, arch %s) into that rack with "+
			"rackplane images import RACK SOURCE", m.Hostname, done, m.Arch, EphemeralOS, EphemeralRelease, m.Arch)
	}
	return ChooseImage(m, offers, DeployRequest{OS: EphemeralOS, Release: EphemeralRelease, Arch: m.Arch})
}

// TargetDisk chooses the disk of inv a disk image is written to: the one
// named (a kernel name, serial, WWID or /dev/disk/by-id path), else the
// largest. It returns the disk's kernel name, which the agent finds in
// the same environment that took the inventory. A machine without disks
// in its inventory is a conflict (commission it first); a disk not in it
// is invalid, naming those there are.
func TargetDisk(m rackplane.Machine, inv *events.Inventory, want string) (string, error) {
	if inv == nil || len(inv.Disks) == 0 {
		return "", rackplane.Errorf(rackplane.ECONFLICT, "machine %s has no disks in its inventory: commission it first, "+
			"so that the disk image has a disk to go to", m.Hostname)
	}
	var usable []events.InventoryDisk
	for _, d := range inv.Disks {
		if !d.Removable && d.SizeBytes > 0 {
			usable = append(usable, d)
		}
	}
	if want == "" {
		if len(usable) == 0 {
			return "", rackplane.Errorf(rackplane.ECONFLICT, "machine %s has only removable disks in its inventory: name the disk to write", m.Hostname)
		}
		best := usable[0]
		for _, d := range usable[1:] {
			if d.SizeBytes > best.SizeBytes {
				best = d
			}
		}
		return best.Name, nil
	}
	short := strings.TrimPrefix(want, "/dev/disk/by-id/")
	var names []string
	for _, d := range inv.Disks {
		if d.Name == strings.TrimPrefix(want, "/dev/") || d.Serial != "" && d.Serial == want || d.WWID != "" && d.WWID == want ||
			slices.ContainsFunc(d.ByID, func(p string) bool { return p == want || strings.TrimPrefix(p, "/dev/disk/by-id/") == short }) {
			return d.Name, nil
		}
		n := d.Name
		if d.Serial != "" {
			n += " (serial " + d.Serial + ")"
		}
		names = append(names, n)
	}
	return "", invalid("disk %q is not in machine %s's inventory; its disks are %s", want, m.Hostname, strings.Join(names, ", "))
}

// DiskWrittenReported takes the outcome of the agent that wrote the disk
// image of deployment operationID: success boots the machine from its
// disk from now on (it stays deploying until the installed system phones
// home), failure fails the deployment with message. An outcome for
// another operation of the machine changes nothing and is ErrMovedOn.
func (s *Service) DiskWrittenReported(ctx context.Context, id, operationID string, success bool, message string, meta Meta) (Result, error) {
	return s.execute(ctx, id, actionDiskWritten, meta, func(m rackplane.Machine) (Command, error) {
		if m.DeploymentID == nil || *m.DeploymentID != operationID {
			return nil, ErrMovedOn
		}
		if !success {
			return DiskWritten{Message: message}, nil
		}
		inv, err := s.store.Inventory(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		return DiskWritten{Success: true, Message: message, NICs: events.BootNICs(inv)}, nil
	})
}

// CommissioningReported takes the agent's outcome of commissioning
// operationID (the machine_commissioning event, which its boot decision
// names): success leaves the machine ready, failure failed with message.
// The rack checked the agent's credential for that operation; an outcome
// for another operation of the machine (an earlier commissioning's agent
// that speaks late) changes nothing and is ErrMovedOn.
func (s *Service) CommissioningReported(ctx context.Context, id, operationID string, success bool, message string, meta Meta) (Result, error) {
	return s.execute(ctx, id, actionCommissionDone, meta, func(m rackplane.Machine) (Command, error) {
		if m.DeploymentID == nil || *m.DeploymentID != operationID {
			return nil, ErrMovedOn
		}
		return CommissioningReport{Success: success, Message: message}, nil
	})
}

// ReleaseRequest is how a release goes; nil and "" are the region's
// defaults.
type ReleaseRequest struct {
	// PowerOff says whether the region switches the machine off before
	// it is ready; a machine without power parameters is ready at once
	// either way.
	PowerOff *bool
	// Erase is how the disks are erased before the machine is ready
	// (events.EraseNone, quick, full).
	Erase string
}

// Release ends a machine's deployment. With an erase the machine boots
// the ephemeral environment (chosen as Commission chooses it), whose agent
// erases its disks and powers it off; it is ready when the agent reports
// success. A release without erase of a machine erasing abandons the
// erase.
func (s *Service) Release(ctx context.Context, id string, req ReleaseRequest, meta Meta) (Result, error) {
	if err := CheckErase(req.Erase); err != nil {
		return Result{}, err
	}
	return s.execute(ctx, id, ActionRelease, meta, func(m rackplane.Machine) (Command, error) {
		erase := s.releaseErase
		if req.Erase != "" {
			erase = req.Erase
		}
		if m.Status == statusErasing && req.Erase == "" && (erase == "" || erase == events.EraseNone) {
			// The region's default of none is nobody's word that this
			// erase may be abandoned: the machine would be ready with
			// its disks as they were.
			return nil, rackplane.Errorf(rackplane.ECONFLICT, "machine %s is erasing its disks; release it with erase none to "+
				"abandon the erase, or with erase quick or full to start it again", m.Hostname)
		}
		if erase != "" && erase != events.EraseNone {
			env, err := s.environment(ctx, m, "erased")
			if err != nil {
				return nil, err
			}
			return Release{Erase: erase, Environment: env}, nil
		}
		off := s.releasePowerOff
		if req.PowerOff != nil {
			off = *req.PowerOff
		}
		if !off {
			return Release{}, nil
		}
		has, err := s.store.HasPowerParameters(ctx, m.ID)
		return Release{PowerOff: has}, err
	})
}

// ErasingReported takes the agent's outcome of the erase operationID (the
// machine_erasing event, which its boot decision names): success leaves
// the machine ready, failure failed with message. An outcome for another
// operation of the machine changes nothing and is ErrMovedOn.
func (s *Service) ErasingReported(ctx context.Context, id, operationID string, success bool, message string, meta Meta) (Result, error) {
	return s.execute(ctx, id, actionEraseDone, meta, func(m rackplane.Machine) (Command, error) {
		if m.DeploymentID == nil || *m.DeploymentID != operationID {
			return nil, ErrMovedOn
		}
		return EraseReport{Success: success, Message: message}, nil
	})
}

// ReleaseFinished ends a release that was switching the machine off: it
// is ready, or failed with message. A machine no longer releasing is left
// as it is.
func (s *Service) ReleaseFinished(ctx context.Context, id string, success bool, message string, meta Meta) (Result, error) {
	return s.command(ctx, id, ReleaseFinished{Success: success, Message: message}, meta)
}

// PowerFailed fails deployment deploymentID (or erase) of a machine
// because it could not be powered into its installer (or the ephemeral
// environment). A machine that has moved on to
// another deployment, or out of deploying, is left as it is.
func (s *Service) PowerFailed(ctx context.Context, id, deploymentID, reason string, meta Meta) (Result, error) {
	return s.execute(ctx, id, actionPowerFailed, meta, func(m rackplane.Machine) (Command, error) {
		if m.DeploymentID == nil || *m.DeploymentID != deploymentID {
			return nil, ErrMovedOn
		}
		return PowerFailed{Reason: reason}, nil
	})
}

// MarkFailed fails the operation in flight.
func (s *Service) MarkFailed(ctx context.Context, id, reason string, meta Meta) (Result, error) {
	return s.command(ctx, id, MarkFailed{Reason: reason}, meta)
}

// MarkBroken takes a machine out of service.
func (s *Service) MarkBroken(ctx context.Context, id, reason string, meta Meta) (Result, error) {
	return s.command(ctx, id, MarkBroken{Reason: reason}, meta)
}

// MarkFixed returns a broken machine to service.
func (s *Service) MarkFixed(ctx context.Context, id string, meta Meta) (Result, error) {
	return s.command(ctx, id, MarkFixed{}, meta)
}

// InstallReported takes the installer's outcome of the deployment
// deploymentID; the caller has authenticated the report for it. A report
// for another deployment of the machine is refused.
func (s *Service) InstallReported(ctx context.Context, id, deploymentID string, success bool, message string, meta Meta) (Result, error) {
	return s.execute(ctx, id, actionInstallReport, meta, func(m rackplane.Machine) (Command, error) {
		if m.DeploymentID == nil || *m.DeploymentID != deploymentID {
			return nil, rackplane.Errorf(rackplane.EFORBIDDEN, "this report is not for machine %s's current deployment", m.Hostname)
		}
		return InstallReport{Success: success, Message: message}, nil
	})
}

// TimeOutDeployments fails the deployments that started before now minus
// timeout, at most limit of them, and returns the machines it failed.
func (s *Service) TimeOutDeployments(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error) {
	overdue, err := s.store.OverdueDeployments(ctx, s.now().Add(-timeout), limit)
	if err != nil {
		return nil, err
	}
	return s.timeOut(ctx, overdue, DeployTimedOut{Timeout: timeout}, "system:deploywatch")
}

// TimeOutCommissionings fails the commissionings that started before now
// minus timeout, at most limit of them, and returns the machines it
// failed.
func (s *Service) TimeOutCommissionings(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error) {
	overdue, err := s.store.OverdueCommissionings(ctx, s.now().Add(-timeout), limit)
	if err != nil {
		return nil, err
	}
	return s.timeOut(ctx, overdue, CommissionTimedOut{Timeout: timeout}, "system:deploywatch")
}

// TimeOutErasings fails the erases that started before now minus timeout,
// at most limit of them, and returns the machines it failed.
func (s *Service) TimeOutErasings(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error) {
	overdue, err := s.store.OverdueErasings(ctx, s.now().Add(-timeout), limit)
	if err != nil {
		return nil, err
	}
	return s.timeOut(ctx, overdue, EraseTimedOut{Timeout: timeout}, "system:deploywatch")
}

// timeOut decides cmd on each machine as listed: if one moved on since
// (a report, an operator, another region), its append conflicts and the
// next check looks again.
func (s *Service) timeOut(ctx context.Context, overdue []rackplane.Machine, cmd Command, actor string) ([]rackplane.Machine, error) {
	var failed []rackplane.Machine
	for _, m := range overdue {
		evs, err := Decide(m, cmd, s.now())
		if err != nil {
			return failed, err
		}
		if len(evs) == 0 {
			continue
		}
		err = s.store.AppendMachine(ctx, m.ID, m.Version, stamp(evs, Meta{Actor: actor}))
		if errors.Is(err, ErrChanged) {
			continue
		}
		if err != nil {
			return failed, err
		}
		failed = append(failed, m)
	}
	return failed, nil
}

func (s *Service) command(ctx context.Context, id string, cmd Command, meta Meta) (Result, error) {
	return s.execute(ctx, id, cmd.action(), meta, func(rackplane.Machine) (Command, error) { return cmd, nil })
}

// execute reads the machine, builds the command for it (prepare may read
// more, and refuse), decides, and appends at the version read; on a
// concurrent change it starts over, a few times, unless the caller pinned
// the version with IfMatch.
func (s *Service) execute(ctx context.Context, id, action string, meta Meta, prepare func(rackplane.Machine) (Command, error)) (Result, error) {
	for attempt := 0; ; attempt++ {
		m, err := s.store.GetMachine(ctx, id)
		if err != nil {
			return Result{}, err
		}
		m = withActions(m)
		if meta.IfMatch != nil && *meta.IfMatch != m.Version {
			return Result{Before: m}, rackplane.Errorf(rackplane.EPRECONDITION, "version %d was changed: it is now at %d", *meta.IfMatch, m.Version)
		}
		// A status that refuses an operator's action says so before
		// anything the request got wrong, whatever the request.
		if slices.Contains(operatorActions, action) && !Allowed(m.Status, action) {
			return Result{Before: m}, refuse(m, action)
		}
		cmd, err := prepare(m)
		if err != nil {
			return Result{Before: m}, err
		}
		evs, err := Decide(m, cmd, s.now())
		if err != nil || len(evs) == 0 {
			return Result{Before: m, After: m}, err
		}
		err = s.store.AppendMachine(ctx, id, m.Version, stamp(evs, meta))
		if errors.Is(err, ErrChanged) {
			if meta.IfMatch != nil {
				return Result{Before: m}, rackplane.WrapError(rackplane.EPRECONDITION, err, "changed by someone else meanwhile; read it again")
			}
			if attempt < 5 {
				continue
			}
			return Result{Before: m}, rackplane.WrapError(rackplane.ECONFLICT, err, "machine %s keeps changing; try again", m.Hostname)
		}
		if err != nil {
			return Result{Before: m}, err
		}
		res := Result{Before: m, Changed: true}
		if action == ActionDelete {
			return res, nil
		}
		res.After, err = s.Get(ctx, id)
		return res, err
	}
}

// stamp puts who and why on every event of a change.
func stamp(evs []events.Event, meta Meta) []events.Event {
	for i := range evs {
		if meta.Actor != "" {
			evs[i].Actor = meta.Actor
		}
		if meta.CorrelationID != "" {
			evs[i].CorrelationID = meta.CorrelationID
		}
		if meta.Cause != nil && evs[i].CausationID == "" {
			evs[i] = evs[i].CausedBy(*meta.Cause)
		}
	}
	return evs
}

// bootRack checks that a boot rack id names a rack; "" clears it.
func (s *Service) bootRack(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", invalid("boot_rack_id %q is not a UUID", id)
	}
	ok, err := s.store.RackExists(ctx, u.String())
	if err != nil {
		return "", err
	}
	if !ok {
		return "", invalid("boot_rack_id: no rack %s in service (it never joined, or it is retired)", u)
	}
	return u.String(), nil
}

// macsFree refuses MACs another machine has.
func (s *Service) macsFree(ctx context.Context, macs []string, self string) error {
	for _, mac := range macs {
		m, err := s.store.MachineByMAC(ctx, mac)
		if err == nil && m.ID != self {
			return rackplane.Errorf(rackplane.ECONFLICT, "MAC %s belongs to machine %s (%s)", mac, m.Hostname, m.ID)
		}
		if err != nil && rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
			return err
		}
	}
	return nil
}

// ChooseImage picks the image a machine deploys: the newest version of
// os/release/arch on an online rack that can reach the machine (its boot
// rack when it has one). When there is none the error says what is missing
// where.
func ChooseImage(m rackplane.Machine, offers []BootImage, req DeployRequest) (BootImage, error) {
	reach := func(rackID string) bool { return m.BootRackID == nil || *m.BootRackID == rackID }
	var best []BootImage
	for _, i := range offers {
		if i.Online && reach(i.RackID) && (req.Subarch == "" || i.Subarch == req.Subarch) {
			best = append(best, i)
		}
	}
	if len(best) > 0 {
		sort.SliceStable(best, func(a, b int) bool { return best[a].Version > best[b].Version })
		return best[0], nil
	}
	want := req.OS + "/" + req.Release + "/" + req.Arch
	if req.Subarch != "" {
		want += "/" + req.Subarch
	}
	var why []string
	add := func(s string) {
		for _, w := range why {
			if w == s {
				return
			}
		}
		why = append(why, s)
	}
	for _, i := range offers {
		switch {
		case !reach(i.RackID):
			add(fmt.Sprintf("rack %s has it but cannot reach the machine (its boot rack is another)", i.RackName))
		case !i.Online:
			add(fmt.Sprintf("rack %s has it but is offline", i.RackName))
		case req.Subarch != "" && i.Subarch != req.Subarch:
			add(fmt.Sprintf("rack %s has it only for subarch %s", i.RackName, i.Subarch))
		}
	}
	if len(why) == 0 {
		why = append(why, "no rack has an image of it")
	}
	return BootImage{}, rackplane.Errorf(rackplane.ECONFLICT, "no online rack that can reach machine %s can boot %s: %s",
		m.Hostname, want, strings.Join(why, "; "))
}
