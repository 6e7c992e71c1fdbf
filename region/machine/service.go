package machine

import (
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

// Store is what the lifecycle needs of the region's database. The region's
// postgres package implements it.
type Store interface {
	GetMachine(ctx context.Context, id string) (rackplane.Machine, error)
	MachineByMAC(ctx context.Context, mac string) (rackplane.Machine, error)
	ListMachines(ctx context.Context, f Filter) ([]rackplane.Machine, error)
	OverdueDeployments(ctx context.Context, before time.Time, limit int) ([]rackplane.Machine, error)
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
	// or deletes them before more are made.
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

// Filter narrows a machine list.
type Filter struct {
	Status, Hostname, MAC, OS string
	After                     string // hostname cursor
	Limit                     int
}

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
}

// NewService returns a service on store. now may be nil (time.Now).
func NewService(store Store, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, now: now, log: log}
}

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
		ms[i] = withActions(ms[i])
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
	return true, nil
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
}

// Deploy installs an OS: the newest image of it on an online rack that
// reaches the machine, with the current version of its preseed pinned.
func (s *Service) Deploy(ctx context.Context, id string, req DeployRequest, meta Meta) (Result, error) {
	if req.OS == "" || req.Release == "" {
		return Result{}, invalid("os and release are required: a deployment says what it installs")
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

// Release ends a machine's deployment.
func (s *Service) Release(ctx context.Context, id string, meta Meta) (Result, error) {
	return s.command(ctx, id, Release{}, meta)
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
	var failed []rackplane.Machine
	for _, m := range overdue {
		// Decided on the machine as listed: if it moved on since (an
		// installer's report, a release, another region), the append
		// conflicts and the next check looks again.
		evs, err := Decide(m, DeployTimedOut{Timeout: timeout}, s.now())
		if err != nil {
			return failed, err
		}
		if len(evs) == 0 {
			continue
		}
		err = s.store.AppendMachine(ctx, m.ID, m.Version, stamp(evs, Meta{Actor: "system:deploywatch"}))
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
		return "", invalid("boot_rack_id: no rack %s", u)
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
