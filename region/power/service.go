package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/rackcall"
	"github.com/rackplane/rackplane/region/secrets"
)

// Store is what power needs of the region's database.
type Store interface {
	GetMachine(ctx context.Context, id string) (rackplane.Machine, error)
	GetRack(ctx context.Context, id string) (rackplane.Rack, error)
	GetPower(ctx context.Context, machineID string) (postgres.PowerParameters, error)
	SetPower(ctx context.Context, sealed *secrets.Secret, ev events.Event) error
	ClearPower(ctx context.Context, ev events.Event) error
	OpenSecret(ctx context.Context, kr *secrets.Keyring, name string) ([]byte, error)
	PowerDriverRacks(ctx context.Context, driver string) ([]postgres.PowerDriverOnRack, error)
	DrivingRack(ctx context.Context, machineID string) (rackID, why, cidr string, err error)
	PowerWorkOf(ctx context.Context, machineID string) (*postgres.PowerWork, error)
	RecordPowerRequest(ctx context.Context, ev events.Event) error
}

// Service keeps machines' power parameters and asks racks for power
// actions.
type Service struct {
	store Store
	nc    *nats.Conn
	keys  *secrets.Keyring
	now   func() time.Time
	log   *slog.Logger
}

// New returns a service; now and log may be nil (time.Now,
// slog.Default()).
func New(store Store, nc *nats.Conn, keys *secrets.Keyring, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, nc: nc, keys: keys, now: now, log: log}
}

// Meta says who asks, for the events.
type Meta struct {
	Actor, RequestID string
}

// Set replaces a machine's power parameters and returns them before (nil
// when there were none) and after. A password absent from req keeps the
// stored one.
func (s *Service) Set(ctx context.Context, machineID string, req SetRequest, meta Meta) (before *postgres.PowerParameters, after postgres.PowerParameters, err error) {
	if err := req.Check(); err != nil {
		return nil, after, err
	}
	if _, err := s.store.GetMachine(ctx, machineID); err != nil {
		return nil, after, err
	}
	if req.RackID != "" {
		rack, err := s.store.GetRack(ctx, req.RackID)
		if err != nil {
			if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
				return nil, after, rackplane.Errorf(rackplane.EINVALID, "invalid power parameters: rack_id: no rack %s has joined", req.RackID)
			}
			return nil, after, err
		}
		if rack.RetiredAt != nil {
			return nil, after, rackplane.Errorf(rackplane.EINVALID, "invalid power parameters: rack_id: rack %s (%s) is retired", rack.Name, rack.ID)
		}
	}
	old, err := s.store.GetPower(ctx, machineID)
	switch {
	case err == nil:
		before = &old
	case rackplane.ErrorCode(err) != rackplane.ENOTFOUND:
		return nil, after, err
	}
	var password []byte
	keep := req.Password == nil && before != nil && before.PasswordSet
	if keep {
		if password, err = s.store.OpenSecret(ctx, s.keys, postgres.PowerSecretName(machineID)); err != nil {
			return before, after, err
		}
		if req.Driver == DriverIPMI && len(password) > IPMIPasswordMax {
			return before, after, rackplane.Errorf(rackplane.EINVALID,
				"invalid power parameters: password: the stored one is %d bytes and IPMI takes at most %d: give a new one", len(password), IPMIPasswordMax)
		}
	} else if req.Password != nil {
		password = []byte(*req.Password)
	}
	data := events.PowerParametersSet{MachineID: machineID, Driver: req.Driver, Address: req.Address, Port: req.Port,
		Username: req.Username, Extra: req.Extra, RackID: req.RackID}
	if data.Extra == nil {
		data.Extra = map[string]string{}
	}
	var sealed *secrets.Secret
	if len(password) > 0 {
		sec := s.keys.SealSecret(postgres.PowerSecretName(machineID), password)
		sealed = &sec
		data.PasswordSet, data.PasswordFingerprint = true, sec.Fingerprint
	}
	ev, err := events.New(events.RegionSource, events.TypePowerParametersSet, events.MachineStreamName(machineID), s.now(), data)
	if err != nil {
		return before, after, err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.RequestID
	if err := s.store.SetPower(ctx, sealed, ev); err != nil {
		return before, after, err
	}
	after, err = s.store.GetPower(ctx, machineID)
	return before, after, err
}

// Get returns a machine's power parameters, without the password.
func (s *Service) Get(ctx context.Context, machineID string) (postgres.PowerParameters, error) {
	if _, err := s.store.GetMachine(ctx, machineID); err != nil {
		return postgres.PowerParameters{}, err
	}
	return s.store.GetPower(ctx, machineID)
}

// Clear removes a machine's power parameters and its sealed password,
// and returns what they were.
func (s *Service) Clear(ctx context.Context, machineID string, meta Meta) (postgres.PowerParameters, error) {
	old, err := s.Get(ctx, machineID)
	if err != nil {
		return old, err
	}
	ev, err := events.New(events.RegionSource, events.TypePowerParametersCleared, events.MachineStreamName(machineID), s.now(),
		events.PowerParametersCleared{MachineID: machineID})
	if err != nil {
		return old, err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.RequestID
	return old, s.store.ClearPower(ctx, ev)
}

// Result is what a rack answered to a power action.
type Result struct {
	MachineID string             `json:"machine_id"`
	RackID    string             `json:"rack_id"`
	Driver    string             `json:"driver"`
	Action    events.PowerAction `json:"action"`
	State     string             `json:"state"`
	Outcome   string             `json:"outcome"`
	// Error is why the action failed, as the rack said it.
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// Act asks the rack that drives the machine to run action (on, off,
// cycle, status). It returns the rack's answer when the action
// succeeded, and an error by the outcome when it did not (see the
// package's doc).
func (s *Service) Act(ctx context.Context, machineID string, action events.PowerAction, timeout time.Duration, meta Meta) (Result, error) {
	return s.act(ctx, machineID, action, "", false, timeout, meta)
}

// Poll asks the rack that drives the machine for its power state as a
// periodic poll: no power_action_requested, and the rack publishes no
// power_action_completed (events.PowerRequest.Poll); the caller records
// what changed.
func (s *Service) Poll(ctx context.Context, machineID string, timeout time.Duration) (Result, error) {
	return s.act(ctx, machineID, events.PowerStatus, "", true, timeout, Meta{})
}

// SetBoot asks the rack that drives the machine to set its next boot
// device (events.BootDevicePXE or BootDeviceDisk), as Act does.
func (s *Service) SetBoot(ctx context.Context, machineID, device string, timeout time.Duration, meta Meta) (Result, error) {
	return s.act(ctx, machineID, events.PowerSetBoot, device, false, timeout, meta)
}

func (s *Service) act(ctx context.Context, machineID string, action events.PowerAction, bootDevice string, poll bool, timeout time.Duration, meta Meta) (Result, error) {
	res := Result{MachineID: machineID, Action: action}
	if _, err := s.store.GetMachine(ctx, machineID); err != nil {
		return res, err
	}
	p, err := s.store.GetPower(ctx, machineID)
	if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
		return res, rackplane.Errorf(rackplane.ECONFLICT, "machine %s has no power parameters: set them first (PUT /api/v1/machines/%s/power)", machineID, machineID)
	}
	if err != nil {
		return res, err
	}
	res.Driver = p.Driver
	rackID, _, _, err := s.store.DrivingRack(ctx, machineID)
	if err != nil {
		return res, err
	}
	if rackID == "" {
		return res, rackplane.Errorf(rackplane.ECONFLICT, "no rack drives machine %s: it has no boot rack yet and no rack serves a subnet holding its BMC's address; name one in the power parameters' rack_id", machineID)
	}
	res.RackID = rackID
	rack, err := s.store.GetRack(ctx, rackID)
	if err != nil {
		return res, err
	}
	drivers, err := s.store.PowerDriverRacks(ctx, p.Driver)
	if err != nil {
		return res, err
	}
	if err := CheckDriver(drivers, rack, p.Driver, action); err != nil {
		return res, err
	}
	req := events.PowerRequest{MachineID: machineID, Driver: p.Driver, Action: action, BootDevice: bootDevice, Poll: poll,
		Parameters: events.PowerParameters{Address: p.Address, Port: p.Port, Username: p.Username, Extra: p.Extra}}
	if len(req.Parameters.Extra) == 0 {
		req.Parameters.Extra = nil
	}
	if p.PasswordSet {
		pw, err := s.store.OpenSecret(ctx, s.keys, postgres.PowerSecretName(machineID))
		if err != nil {
			return res, err
		}
		req.Parameters.Password = string(pw)
	}
	if !poll {
		if err := s.record(ctx, rackID, req, meta); err != nil {
			return res, err
		}
	}
	var reply events.PowerReply
	err = rackcall.Do(ctx, s.nc, s.log, rackcall.Call{Rack: rack, Method: events.MethodPower, Timeout: timeout, What: "the machine's BMC",
		RequestSchema: events.PowerRPCSchema(events.PartRequest), ReplySchema: events.PowerRPCSchema(events.PartReply),
		TimedOut: fmt.Sprintf("rack %s (%s) did not finish power %s of machine %s within %s; its outcome will show on the machine when it ends",
			rack.ID, rack.Name, action, machineID, timeout)}, req, &reply)
	if err != nil {
		return res, err
	}
	if reply.MachineID != machineID || reply.Action != action {
		return res, rackplane.Errorf(rackplane.EUNAVAILABLE, "rack %s answered power %s of machine %s about %s of %.40q; is it running a compatible version?",
			rack.ID, action, machineID, reply.Action, reply.MachineID)
	}
	res.State, res.Outcome, res.Error, res.DurationMS = reply.State, reply.Outcome, reply.Error, reply.DurationMS
	if !reply.OK {
		return res, outcomeError(rack, reply)
	}
	return res, nil
}

// record emits power_action_requested before the request leaves, so that
// every request a rack may have run is in the log.
func (s *Service) record(ctx context.Context, rackID string, req events.PowerRequest, meta Meta) error {
	ev, err := events.New(events.RegionSource, events.TypePowerActionRequested, events.MachineStreamName(req.MachineID), s.now(),
		events.PowerActionRequested{MachineID: req.MachineID, RackID: rackID, Driver: req.Driver, Action: req.Action, BootDevice: req.BootDevice})
	if err != nil {
		return err
	}
	ev.Actor, ev.CorrelationID = meta.Actor, meta.RequestID
	return s.store.RecordPowerRequest(ctx, ev)
}

// Work returns the lifecycle's power work on the machine (nil: none): a
// deployment's power on or a release's power off, its attempts and why
// the last failed, while the machine waits on it.
func (s *Service) Work(ctx context.Context, machineID string) (*postgres.PowerWork, error) {
	return s.store.PowerWorkOf(ctx, machineID)
}

// Driving is the rack that drives a machine's BMC and why.
type Driving struct {
	RackID string
	// Reason says why, for an operator: named in the power parameters,
	// serving the subnet of the BMC's address, or the machine's boot rack.
	Reason string
}

// DrivingRack returns the rack that drives the machine, and why (the
// zero Driving when none does); ENOTFOUND without power parameters.
func (s *Service) DrivingRack(ctx context.Context, machineID string) (Driving, error) {
	id, why, cidr, err := s.store.DrivingRack(ctx, machineID)
	if err != nil || id == "" {
		return Driving{}, err
	}
	d := Driving{RackID: id}
	switch why {
	case postgres.DrivenByNamedRack:
		d.Reason = "named in the power parameters (rack_id)"
	case postgres.DrivenBySubnet:
		d.Reason = "it serves subnet " + cidr + ", which holds the BMC's address"
	default:
		d.Reason = "the machine's boot rack"
	}
	return d, nil
}

// CheckDriver refuses, with the rack's reason, an action the rack cannot
// run: it does not report the driver, reports it unusable, or the driver
// does not offer the action. drivers are the racks' reports of driver.
func CheckDriver(drivers []postgres.PowerDriverOnRack, rack rackplane.Rack, driver string, action events.PowerAction) error {
	i := slices.IndexFunc(drivers, func(d postgres.PowerDriverOnRack) bool { return d.RackID == rack.ID })
	if i < 0 {
		var elsewhere []string
		for _, d := range drivers {
			if d.Available {
				elsewhere = append(elsewhere, d.RackName)
			}
		}
		msg := fmt.Sprintf("rack %s (%s), which drives this machine, does not report power driver %s", rack.ID, rack.Name, driver)
		if len(elsewhere) > 0 {
			msg += "; racks that do: " + strings.Join(elsewhere, ", ") + " (name one in the power parameters' rack_id)"
		}
		return rackplane.Errorf(rackplane.ECONFLICT, "%s", msg)
	}
	d := drivers[i]
	switch {
	case !d.Available:
		return rackplane.Errorf(rackplane.ECONFLICT, "power driver %s is not usable on rack %s (%s): %s", driver, rack.ID, rack.Name, d.Detail)
	case !slices.Contains(d.Actions, action):
		return rackplane.WrapError(rackplane.ECONFLICT, ErrNotOffered, "power driver %s on rack %s (%s) does not offer %s", driver, rack.ID, rack.Name, action)
	}
	return nil
}

// ErrNotOffered is in the chain of the error of an action the machine's
// power driver does not offer on its rack.
var ErrNotOffered = errors.New("the power driver does not offer the action")

// outcomeError maps a failed action's outcome to an API error. The
// BMC's refusal of credentials is the BMC's business, not the API
// caller's: a conflict, never EUNAUTHORIZED.
func outcomeError(rack rackplane.Rack, r events.PowerReply) error {
	what := fmt.Sprintf("power %s of machine %s through rack %s (%s): %s", r.Action, r.MachineID, rack.ID, rack.Name, r.Outcome)
	if r.Error != "" {
		what += ": " + rackcall.Clip(r.Error)
	}
	switch r.Outcome {
	case events.PowerOutcomeTimeout:
		return rackplane.Errorf(rackplane.ETIMEOUT, "%s", what)
	case events.PowerOutcomeUnreachable, events.PowerOutcomeBusy:
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "%s", what)
	case events.PowerOutcomeAuthFailed:
		return rackplane.Errorf(rackplane.ECONFLICT, "%s (the BMC refused the stored credentials: set them again)", what)
	}
	return rackplane.Errorf(rackplane.ECONFLICT, "%s", what)
}

// Drivers returns every power driver as each rack last reported it,
// unusable ones with the reason, so that an operator sees which rack can
// drive which machine.
func (s *Service) Drivers(ctx context.Context) ([]postgres.PowerDriverOnRack, error) {
	ds, err := s.store.PowerDriverRacks(ctx, "")
	if ds == nil {
		ds = []postgres.PowerDriverOnRack{}
	}
	return ds, err
}
