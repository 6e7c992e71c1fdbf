package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/rackcall"
)

// Limits the rack enforces too; checked here so that bad input is invalid
// even while no rack answers.
const (
	maxVolumeMiB    = 1 << 40
	maxParameters   = 64
	maxParamNameLen = 64
	maxParamValue   = 4096
)

var (
	providerNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	paramNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Store is what volumes need of the region's database.
type Store interface {
	GetMachine(ctx context.Context, id string) (rackplane.Machine, error)
	GetRack(ctx context.Context, id string) (rackplane.Rack, error)
	GetVolume(ctx context.Context, id string) (postgres.Volume, error)
	ListVolumes(ctx context.Context, machineID string, withRemoved bool) ([]postgres.Volume, error)
	StorageProviderRacks(ctx context.Context, provider string) ([]postgres.ProviderOnRack, error)
	RequestVolume(ctx context.Context, ev events.Event) error
}

// Service runs storage actions on the racks that hold the volumes.
type Service struct {
	store Store
	nc    *nats.Conn
	now   func() time.Time
	log   *slog.Logger
}

// New returns a service; now may be nil (time.Now).
func New(store Store, nc *nats.Conn, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, nc: nc, now: now, log: log}
}

// CreateRequest is a new volume for a machine.
type CreateRequest struct {
	Provider   string            `json:"provider"`
	SizeMiB    int64             `json:"size_mib"`
	Parameters map[string]string `json:"parameters,omitempty"`
}

// Check refuses what no rack would take.
func (req CreateRequest) Check() error {
	switch {
	case !providerNameRE.MatchString(req.Provider):
		return rackplane.Errorf(rackplane.EINVALID, "provider %.80q is not a storage provider name (letters, digits, '_', '.', '-'; at most 64)", req.Provider)
	case req.SizeMiB < 1 || req.SizeMiB > maxVolumeMiB:
		return rackplane.Errorf(rackplane.EINVALID, "size_mib must be from 1 to %d", int64(maxVolumeMiB))
	case len(req.Parameters) > maxParameters:
		return rackplane.Errorf(rackplane.EINVALID, "at most %d parameters", maxParameters)
	}
	for k, v := range req.Parameters {
		if len(k) > maxParamNameLen || !paramNameRE.MatchString(k) {
			return rackplane.Errorf(rackplane.EINVALID, "parameter name %.80q is not letters, digits and '_' (at most %d)", k, maxParamNameLen)
		}
		if len(v) > maxParamValue || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return rackplane.Errorf(rackplane.EINVALID, "parameter %s: value must be text without NUL, at most %d bytes", k, maxParamValue)
		}
	}
	return nil
}

// ActionRequest is the body of the actions on a volume; only grow
// (new_size_mib), setinfo (machine_id, to give the volume another owner),
// snapshot (name) and open (exclusive) take one.
type ActionRequest struct {
	NewSizeMiB int64  `json:"new_size_mib,omitempty"`
	MachineID  string `json:"machine_id,omitempty"`
	Name       string `json:"name,omitempty"`
	// Exclusive is required for open: whether only this machine may
	// open the volume is not something to guess.
	Exclusive *bool `json:"exclusive,omitempty"`
}

// Check refuses fields the action does not take and checks those it
// needs that involve nothing but the body.
func (b ActionRequest) Check(action events.StorageAction) error {
	for _, f := range []struct {
		given bool
		field string
		only  events.StorageAction
	}{
		{b.NewSizeMiB != 0, "new_size_mib", events.StorageActionGrow},
		{b.MachineID != "", "machine_id", events.StorageActionSetinfo},
		{b.Name != "", "name", events.StorageActionSnapshot},
		{b.Exclusive != nil, "exclusive", events.StorageActionOpen},
	} {
		if f.given && action != f.only {
			return rackplane.Errorf(rackplane.EINVALID, "%s is for %s only, not %s", f.field, f.only, action)
		}
	}
	switch action {
	case events.StorageActionGrow:
		if b.NewSizeMiB < 1 || b.NewSizeMiB > maxVolumeMiB {
			return rackplane.Errorf(rackplane.EINVALID, "grow needs new_size_mib, from 1 to %d", int64(maxVolumeMiB))
		}
	case events.StorageActionSnapshot:
		if !events.ValidSnapshotName(b.Name) {
			return rackplane.Errorf(rackplane.EINVALID, "snapshot needs a name of letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64), not %.80q", b.Name)
		}
	case events.StorageActionOpen:
		if b.Exclusive == nil {
			return rackplane.Errorf(rackplane.EINVALID, "open needs exclusive: true when only this machine may open the volume, false when others may too")
		}
	}
	return nil
}

// Meta says who asks, for the events and the log.
type Meta struct {
	Actor, RequestID string
}

// Create makes a volume for a machine on a rack that can: it returns the
// volume as planned (before) with the error when the rack could not be
// asked, and as the rack made it (after) otherwise.
func (s *Service) Create(ctx context.Context, machineID string, req CreateRequest, timeout time.Duration, meta Meta) (before, after postgres.Volume, err error) {
	if err := req.Check(); err != nil {
		return before, after, err
	}
	m, err := s.store.GetMachine(ctx, machineID)
	if err != nil {
		return before, after, err
	}
	racks, err := s.store.StorageProviderRacks(ctx, req.Provider)
	if err != nil {
		return before, after, err
	}
	p, err := PickRack(req.Provider, racks, m)
	if err != nil {
		return before, after, err
	}
	for k := range req.Parameters {
		if !slices.ContainsFunc(p.Parameters, func(q events.StorageParameter) bool { return q.Name == k }) {
			return before, after, rackplane.Errorf(rackplane.EINVALID, "storage provider %s on rack %s has no parameter %q (it has: %s)",
				req.Provider, p.RackName, k, paramNames(p.Parameters))
		}
	}
	rack, err := s.store.GetRack(ctx, p.RackID)
	if err != nil {
		return before, after, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return before, after, rackplane.WrapError(rackplane.EINTERNAL, err, "new volume id")
	}
	vid := id.String()
	before = postgres.Volume{ID: vid, MachineID: m.ID, Provider: req.Provider, RackID: rack.ID,
		SizeMiB: req.SizeMiB, State: events.VolumeStateCreating, Parameters: req.Parameters, URIs: []string{}, Snapshots: []events.VolumeSnapshot{},
		LastAction: string(events.StorageActionCreate)}
	if before.Parameters == nil {
		before.Parameters = map[string]string{}
	}
	sreq := events.StorageRequest{VolumeID: vid, Machine: m.ID, Provider: req.Provider, SizeMiB: req.SizeMiB, Parameters: req.Parameters}
	rec, callErr := s.call(ctx, rack, events.StorageActionCreate, sreq, timeout)
	if rackRan(callErr) {
		s.recordRequest(ctx, before, meta)
	}
	if callErr != nil {
		return before, after, callErr
	}
	return before, Merge(before, rec), nil
}

// rackRan reports whether a create reached the rack's provider, or may
// have: then the region records the request, so that the volume has its
// rack and parameters even if the outcome comes only as an event. A rack
// that did not answer ran nothing; one that refused the request outright
// publishes no outcome.
func rackRan(err error) bool {
	if err == nil {
		return true
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return false
	}
	switch rackplane.ErrorCode(err) {
	case rackplane.ETIMEOUT, rackplane.EUNAVAILABLE:
		return true
	}
	return false
}

// recordRequest emits volume_requested. The rack has acted by now, so a
// failure here is logged, not returned: a retry would create a second
// volume, and the rack's own event still records this one.
func (s *Service) recordRequest(ctx context.Context, v postgres.Volume, meta Meta) {
	ev, err := events.New(events.RegionSource, events.TypeVolumeRequested, events.VolumeStreamName(v.ID), s.now(),
		events.VolumeRequested{VolumeID: v.ID, MachineID: v.MachineID, RackID: v.RackID, Provider: v.Provider,
			SizeMiB: v.SizeMiB, Parameters: v.Parameters})
	if err == nil {
		ev.Actor, ev.CorrelationID = meta.Actor, meta.RequestID
		err = s.store.RequestVolume(context.WithoutCancel(ctx), ev)
	}
	if err != nil {
		s.log.Error("record volume request", "volume_id", v.ID, "rack_id", v.RackID, "request_id", meta.RequestID, "err", err)
	}
}

// PickRack chooses the rack for a new volume: one that is online and
// reports the provider valid, preferring the rack the machine boots or was
// deployed from (its storage is the one near the machine), then the rack
// with the fewest volumes. When there is none the conflict says why, rack
// by rack.
func PickRack(provider string, racks []postgres.ProviderOnRack, m rackplane.Machine) (postgres.ProviderOnRack, error) {
	var usable []postgres.ProviderOnRack
	var why []string
	for _, p := range racks {
		switch {
		case !p.Online:
			why = append(why, fmt.Sprintf("rack %s is offline", p.RackName))
		case !p.Valid:
			why = append(why, fmt.Sprintf("on rack %s it is not usable: %s", p.RackName, p.Reason))
		default:
			usable = append(usable, p)
		}
	}
	if len(racks) == 0 {
		return postgres.ProviderOnRack{}, rackplane.Errorf(rackplane.ECONFLICT, "no rack reports storage provider %s", provider)
	}
	if len(usable) == 0 {
		return postgres.ProviderOnRack{}, rackplane.Errorf(rackplane.ECONFLICT, "no online rack can use storage provider %s: %s", provider, strings.Join(why, "; "))
	}
	for _, near := range []*string{m.BootRackID, m.DeployRackID} {
		if near == nil {
			continue
		}
		if i := slices.IndexFunc(usable, func(p postgres.ProviderOnRack) bool { return p.RackID == *near }); i >= 0 {
			return usable[i], nil
		}
	}
	return usable[0], nil
}

func paramNames(ps []events.StorageParameter) string {
	if len(ps) == 0 {
		return "none"
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

// List returns a machine's volumes.
func (s *Service) List(ctx context.Context, machineID string, withRemoved bool) ([]postgres.Volume, error) {
	if _, err := s.store.GetMachine(ctx, machineID); err != nil {
		return nil, err
	}
	vs, err := s.store.ListVolumes(ctx, machineID, withRemoved)
	if vs == nil {
		vs = []postgres.Volume{}
	}
	return vs, err
}

// Get returns a volume.
func (s *Service) Get(ctx context.Context, id string) (postgres.Volume, error) {
	return s.store.GetVolume(ctx, id)
}

// Act runs action on volume id on the rack that has it, and returns the
// volume before and after.
func (s *Service) Act(ctx context.Context, id string, action events.StorageAction, body ActionRequest, timeout time.Duration) (before, after postgres.Volume, err error) {
	v, err := s.store.GetVolume(ctx, id)
	if err != nil {
		return v, after, err
	}
	req, err := Request(action, v, body)
	if err != nil {
		return v, after, err
	}
	if req.Machine != "" {
		if _, err := s.store.GetMachine(ctx, req.Machine); err != nil {
			return v, after, err
		}
	}
	rack, err := s.store.GetRack(ctx, v.RackID)
	if err != nil {
		return v, after, err
	}
	rec, err := s.call(ctx, rack, action, req, timeout)
	if err != nil {
		return v, after, err
	}
	return v, Merge(v, rec), nil
}

// Request checks an action's body and builds the rack's request. Only
// the volume id and the provider go with every action: the rack keeps the
// owner, size and parameters from the create, and sending the region's
// copy could only send a stale one. A new owner (setinfo) must still be
// looked up.
func Request(action events.StorageAction, v postgres.Volume, body ActionRequest) (events.StorageRequest, error) {
	req := events.StorageRequest{VolumeID: v.ID, Provider: v.Provider}
	if err := body.Check(action); err != nil {
		return req, err
	}
	switch action {
	case events.StorageActionGrow:
		req.NewSizeMiB = body.NewSizeMiB
	case events.StorageActionSnapshot:
		req.SnapshotName = body.Name
	case events.StorageActionOpen:
		req.Exclusive = *body.Exclusive
	case events.StorageActionSetinfo:
		if body.MachineID != "" {
			id, err := uuid.Parse(body.MachineID)
			if err != nil {
				return req, rackplane.Errorf(rackplane.EINVALID, "machine_id %.80q is not a UUID", body.MachineID)
			}
			req.Machine = id.String()
		}
	}
	return req, nil
}

// Merge is the volume after an action the rack answered: the rack's
// record is newer than the projection, which catches up from its event.
func Merge(v postgres.Volume, rec events.VolumeRecord) postgres.Volume {
	v.Name, v.State, v.SizeMiB, v.Device = rec.Name, rec.State, rec.SizeMiB, rec.Device
	if rec.Machine != "" {
		v.MachineID = rec.Machine
	}
	v.URIs = rec.URIs
	if v.URIs == nil {
		v.URIs = []string{}
	}
	v.Open, v.OpenExclusive, v.Snapshots = rec.Open, rec.OpenExclusive, rec.Snapshots
	if v.Snapshots == nil {
		v.Snapshots = []events.VolumeSnapshot{}
	}
	v.LastAction, v.LastOK, v.LastErrorCode, v.LastError, v.LastOutputTail = rec.LastAction, true, "", "", nil
	if !rec.UpdatedAt.IsZero() {
		v.UpdatedAt = rec.UpdatedAt
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = v.UpdatedAt
	}
	return v
}

// call runs one storage action on rack. The rack's own errors (a provider
// failure with the tail of its output, a conflict with the volume's state)
// pass through; a rack that does not answer is EUNAVAILABLE, one that does
// not answer in time ETIMEOUT.
func (s *Service) call(ctx context.Context, rack rackplane.Rack, action events.StorageAction, req events.StorageRequest, timeout time.Duration) (events.VolumeRecord, error) {
	method := events.StorageMethod(action)
	var rec events.VolumeRecord
	err := rackcall.Do(ctx, s.nc, s.log, rackcall.Call{Rack: rack, Method: method, Timeout: timeout, What: "the volume it has",
		RequestSchema: events.StorageRPCSchema(method, events.PartRequest), ReplySchema: events.StorageRPCSchema(method, events.PartReply),
		TimedOut: fmt.Sprintf("rack %s (%s) did not finish %s of volume %s within %s; its outcome will show on the volume when it ends",
			rack.ID, rack.Name, action, req.VolumeID, timeout)}, req, &rec)
	if err != nil {
		return events.VolumeRecord{}, err
	}
	if rec.VolumeID != req.VolumeID {
		return rec, rackplane.Errorf(rackplane.EUNAVAILABLE, "rack %s answered %s of volume %s about volume %.40q; is it running a compatible version?",
			rack.ID, method, req.VolumeID, rec.VolumeID)
	}
	return rec, nil
}

// Providers returns every storage provider as each rack last reported it,
// invalid ones with the reason, so an operator sees why a provider they
// installed is not offered.
func (s *Service) Providers(ctx context.Context) ([]Provider, error) {
	all, err := s.store.StorageProviderRacks(ctx, "")
	if err != nil {
		return nil, err
	}
	out := []Provider{}
	for _, p := range all {
		if len(out) == 0 || out[len(out)-1].Name != p.Name {
			out = append(out, Provider{Name: p.Name})
		}
		last := &out[len(out)-1]
		last.Racks = append(last.Racks, p)
	}
	return out, nil
}

// Provider is a provider with what each rack that has it says of it.
type Provider struct {
	Name  string                    `json:"name"`
	Racks []postgres.ProviderOnRack `json:"racks"`
}
