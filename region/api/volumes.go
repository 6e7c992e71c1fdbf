package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/postgres"
)

// How long the volume endpoints wait for the rack unless the request gives
// ?timeout=. Create, grow and snapshot run provider scripts that may copy
// or allocate; the others only map, unmap, open, close or check.
const (
	DefaultVolumeSlowTimeout = 5 * time.Minute
	DefaultVolumeTimeout     = time.Minute
	MaxVolumeTimeout         = 30 * time.Minute
)

// Limits the rack enforces too; checked here so that bad input is a 400
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

func (s *Server) volumeRoutes() {
	s.handle("POST /api/v1/machines/{id}/volumes", s.createVolume)
	s.handle("GET /api/v1/machines/{id}/volumes", s.listVolumes)
	s.handle("GET /api/v1/volumes/{vid}", s.getVolume)
	s.handle("GET /api/v1/storage-providers", s.listStorageProviders)
	s.handle("DELETE /api/v1/volumes/{vid}", s.volumeAction(events.StorageActionRemove, DefaultVolumeTimeout))
	s.handle("POST /api/v1/volumes/{vid}/grow", s.volumeAction(events.StorageActionGrow, DefaultVolumeSlowTimeout))
	s.handle("POST /api/v1/volumes/{vid}/snapshot", s.volumeAction(events.StorageActionSnapshot, DefaultVolumeSlowTimeout))
	for _, a := range []events.StorageAction{events.StorageActionAttach, events.StorageActionDetach, events.StorageActionSetinfo, events.StorageActionVerify,
		events.StorageActionOpen, events.StorageActionClose} {
		s.handle("POST /api/v1/volumes/{vid}/"+string(a), s.volumeAction(a, DefaultVolumeTimeout))
	}
}

// createVolumeRequest is the body of POST /machines/{id}/volumes.
type createVolumeRequest struct {
	Provider   string            `json:"provider"`
	SizeMiB    int64             `json:"size_mib"`
	Parameters map[string]string `json:"parameters,omitempty"`
}

// volumeActionRequest is the body of the actions on a volume; only grow
// (new_size_mib), setinfo (machine_id, to give the volume another owner),
// snapshot (name) and open (exclusive) take one.
type volumeActionRequest struct {
	NewSizeMiB int64  `json:"new_size_mib,omitempty"`
	MachineID  string `json:"machine_id,omitempty"`
	Name       string `json:"name,omitempty"`
	// Exclusive is required for open: whether only this machine may
	// open the volume is not something to guess.
	Exclusive *bool `json:"exclusive,omitempty"`
}

// check refuses fields the action does not take and checks those it
// needs that involve nothing but the body.
func (b volumeActionRequest) check(action events.StorageAction) error {
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

// volumeSummary is a volume in the audit log: what actions change. Of the
// snapshots, only the count and the newest: the list has no bound.
type volumeSummary struct {
	State         string `json:"state"`
	SizeMiB       int64  `json:"size_mib"`
	Device        string `json:"device,omitempty"`
	Machine       string `json:"machine_id"`
	RackID        string `json:"rack_id"`
	Open          bool   `json:"open,omitempty"`
	OpenExclusive bool   `json:"open_exclusive,omitempty"`
	Snapshots     int    `json:"snapshots,omitempty"`
	LastSnapshot  string `json:"last_snapshot,omitempty"`
}

func summary(v postgres.Volume) volumeSummary {
	s := volumeSummary{State: v.State, SizeMiB: v.SizeMiB, Device: v.Device, Machine: v.MachineID, RackID: v.RackID,
		Open: v.Open, OpenExclusive: v.OpenExclusive, Snapshots: len(v.Snapshots)}
	if n := len(v.Snapshots); n > 0 {
		s.LastSnapshot = v.Snapshots[n-1].Name
	}
	return s
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) error {
	machineID, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	var req createVolumeRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	// Until there is a volume, a refusal is the machine's.
	AuditNote(r.Context(), events.MachineStreamName(machineID)+"/volumes", nil, map[string]any{"provider": req.Provider, "size_mib": req.SizeMiB})
	if err := req.check(); err != nil {
		return err
	}
	timeout, err := volumeTimeout(r, DefaultVolumeSlowTimeout)
	if err != nil {
		return err
	}
	m, err := s.db.GetMachine(r.Context(), machineID)
	if err != nil {
		return err
	}
	racks, err := s.db.StorageProviderRacks(r.Context(), req.Provider)
	if err != nil {
		return err
	}
	p, err := pickProviderRack(req.Provider, racks, m)
	if err != nil {
		return err
	}
	for k := range req.Parameters {
		if !slices.ContainsFunc(p.Parameters, func(q events.StorageParameter) bool { return q.Name == k }) {
			return rackplane.Errorf(rackplane.EINVALID, "storage provider %s on rack %s has no parameter %q (it has: %s)",
				req.Provider, p.RackName, k, paramNames(p.Parameters))
		}
	}
	rack, err := s.db.GetRack(r.Context(), p.RackID)
	if err != nil {
		return err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "new volume id")
	}
	vid := id.String()
	v := postgres.Volume{ID: vid, MachineID: machineID, Provider: req.Provider, RackID: rack.ID,
		SizeMiB: req.SizeMiB, State: events.VolumeStateCreating, Parameters: req.Parameters, URIs: []string{}, Snapshots: []events.VolumeSnapshot{},
		LastAction: string(events.StorageActionCreate)}
	if v.Parameters == nil {
		v.Parameters = map[string]string{}
	}
	AuditNote(r.Context(), events.VolumeStreamName(vid), nil, summary(v))
	sreq := events.StorageRequest{VolumeID: vid, Machine: machineID, Provider: req.Provider, SizeMiB: req.SizeMiB, Parameters: req.Parameters}
	rec, callErr := s.storageCall(r.Context(), rack, events.StorageActionCreate, sreq, timeout)
	if rackRan(callErr) {
		s.recordRequest(r, v)
	}
	if callErr != nil {
		return callErr
	}
	v = merge(v, rec)
	AuditNote(r.Context(), events.VolumeStreamName(vid), nil, summary(v))
	w.Header().Set("Location", "/api/v1/volumes/"+vid)
	return writeJSON(w, http.StatusCreated, v)
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
func (s *Server) recordRequest(r *http.Request, v postgres.Volume) {
	ev, err := events.New(events.RegionSource, events.TypeVolumeRequested, events.VolumeStreamName(v.ID), time.Now(),
		events.VolumeRequested{VolumeID: v.ID, MachineID: v.MachineID, RackID: v.RackID, Provider: v.Provider,
			SizeMiB: v.SizeMiB, Parameters: v.Parameters})
	if err == nil {
		err = s.db.RequestVolume(context.WithoutCancel(r.Context()), ev)
	}
	if err != nil {
		s.log.Error("record volume request", "volume_id", v.ID, "rack_id", v.RackID, "request_id", RequestID(r.Context()), "err", err)
	}
}

func (req createVolumeRequest) check() error {
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

// pickProviderRack chooses the rack for a new volume: one that is online
// and reports the provider valid, preferring the rack the machine boots or
// was deployed from (its storage is the one near the machine), then the
// rack with the fewest volumes. When there is none the conflict says why,
// rack by rack.
func pickProviderRack(provider string, racks []postgres.ProviderOnRack, m postgres.Machine) (postgres.ProviderOnRack, error) {
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

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) error {
	machineID, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	var withRemoved bool
	switch v := r.URL.Query().Get("removed"); v {
	case "", "false", "0":
	case "true", "1":
		withRemoved = true
	default:
		return rackplane.Errorf(rackplane.EINVALID, "removed must be true or false, not %q", clipMessage(v))
	}
	if _, err := s.db.GetMachine(r.Context(), machineID); err != nil {
		return err
	}
	vs, err := s.db.ListVolumes(r.Context(), machineID, withRemoved)
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []postgres.Volume{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"volumes": vs})
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	vid, err := PathUUID(r, "vid")
	if err != nil {
		return err
	}
	v, err := s.db.GetVolume(r.Context(), vid)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

// volumeAction sends action to the rack that has the volume.
func (s *Server) volumeAction(action events.StorageAction, def time.Duration) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		vid, err := PathUUID(r, "vid")
		if err != nil {
			return err
		}
		// Every call on the volume is in its audit trail, refused or not.
		AuditNote(r.Context(), events.VolumeStreamName(vid), nil, nil)
		var body volumeActionRequest
		if r.ContentLength != 0 {
			if err := DecodeJSON(r, &body); err != nil {
				return err
			}
		}
		timeout, err := volumeTimeout(r, def)
		if err != nil {
			return err
		}
		v, err := s.db.GetVolume(r.Context(), vid)
		if err != nil {
			return err
		}
		req, err := s.actionRequest(r.Context(), action, v, body)
		if err != nil {
			return err
		}
		rack, err := s.db.GetRack(r.Context(), v.RackID)
		if err != nil {
			return err
		}
		AuditNote(r.Context(), events.VolumeStreamName(vid), summary(v), nil)
		rec, err := s.storageCall(r.Context(), rack, action, req, timeout)
		if err != nil {
			return err
		}
		after := merge(v, rec)
		AuditNote(r.Context(), events.VolumeStreamName(vid), summary(v), summary(after))
		return writeJSON(w, http.StatusOK, after)
	}
}

// actionRequest checks an action's body and builds the rack's request.
// Only the volume id and the provider go with every action: the rack keeps
// the owner, size and parameters from the create, and sending the region's
// copy could only send a stale one.
func (s *Server) actionRequest(ctx context.Context, action events.StorageAction, v postgres.Volume, body volumeActionRequest) (events.StorageRequest, error) {
	req := events.StorageRequest{VolumeID: v.ID, Provider: v.Provider}
	if err := body.check(action); err != nil {
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
			if _, err := s.db.GetMachine(ctx, id.String()); err != nil {
				return req, err
			}
			req.Machine = id.String()
		}
	}
	return req, nil
}

// merge is the volume after an action the rack answered: the rack's
// record is newer than the projection, which catches up from its event.
func merge(v postgres.Volume, rec events.VolumeRecord) postgres.Volume {
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

// storageCall runs one storage action on rack. The request is checked
// against its schema before it leaves, the reply after, as any outside
// input. The rack's own errors (a provider failure with the tail of its
// output, a conflict with the volume's state) pass through; a rack that
// does not answer is EUNAVAILABLE, one that does not answer in time
// ETIMEOUT.
func (s *Server) storageCall(ctx context.Context, rack rackplane.Rack, action events.StorageAction, req events.StorageRequest, timeout time.Duration) (events.VolumeRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := events.StorageMethod(action)
	var rec events.VolumeRecord
	body, err := encodeRequest(method, events.StorageRPCSchema(method, events.PartRequest), req)
	if err != nil {
		return rec, err
	}
	var raw json.RawMessage
	err = rpc.Call(ctx, s.nc, events.RackRPCSubject(rack.ID, method), json.RawMessage(body), &raw)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if !rack.Online {
			return rec, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) has the volume and is offline since %s; try again when it is back",
				rack.ID, rack.Name, rack.StatusChangedAt.UTC().Format(time.RFC3339))
		}
		return rec, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) has the volume and does not answer: it is not connected to NATS (it may have just stopped)", rack.ID, rack.Name)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return rec, rackplane.WrapError(rackplane.ETIMEOUT, err, "rack %s (%s) did not finish %s of volume %s within %s; its outcome will show on the volume when it ends",
			rack.ID, rack.Name, action, req.VolumeID, timeout)
	case err != nil:
		return rec, err
	}
	if err := s.decodeReply(rack, method, events.StorageRPCSchema(method, events.PartReply), raw, &rec); err != nil {
		return events.VolumeRecord{}, err
	}
	if rec.VolumeID != req.VolumeID {
		return rec, rackplane.Errorf(rackplane.EUNAVAILABLE, "rack %s answered %s of volume %s about volume %.40q; is it running a compatible version?",
			rack.ID, method, req.VolumeID, rec.VolumeID)
	}
	return rec, nil
}

// volumeTimeout is ?timeout=, or def.
func volumeTimeout(r *http.Request, def time.Duration) (time.Duration, error) {
	return QueryDuration(r, "timeout", def, 10*time.Millisecond, MaxVolumeTimeout)
}

// storageProvider is a provider with what each rack that has it says of it.
type storageProvider struct {
	Name  string                    `json:"name"`
	Racks []postgres.ProviderOnRack `json:"racks"`
}

// listStorageProviders shows the providers as the racks last reported
// them, invalid ones with the reason, so an operator sees why a provider
// they installed is not offered.
func (s *Server) listStorageProviders(w http.ResponseWriter, r *http.Request) error {
	all, err := s.db.StorageProviderRacks(r.Context(), "")
	if err != nil {
		return err
	}
	out := []storageProvider{}
	for _, p := range all {
		if len(out) == 0 || out[len(out)-1].Name != p.Name {
			out = append(out, storageProvider{Name: p.Name})
		}
		last := &out[len(out)-1]
		last.Racks = append(last.Racks, p)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"storage_providers": out})
}
