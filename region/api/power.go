package api

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/power"
)

// How long the power endpoints wait for the rack unless ?timeout= says:
// a rack answers within twice its -power-timeout (30s by default) and a
// little.
const (
	DefaultPowerTimeout = 75 * time.Second
	MaxPowerTimeout     = 25 * time.Minute
)

// Power keeps machines' power parameters and runs power actions
// (power.Service).
type Power interface {
	Set(ctx context.Context, machineID string, req power.SetRequest, meta power.Meta) (before *postgres.PowerParameters, after postgres.PowerParameters, err error)
	Get(ctx context.Context, machineID string) (postgres.PowerParameters, error)
	Clear(ctx context.Context, machineID string, meta power.Meta) (postgres.PowerParameters, error)
	Act(ctx context.Context, machineID string, action events.PowerAction, timeout time.Duration, meta power.Meta) (power.Result, error)
	Drivers(ctx context.Context) ([]postgres.PowerDriverOnRack, error)
	DrivingRack(ctx context.Context, machineID string) (power.Driving, error)
	Work(ctx context.Context, machineID string) (*postgres.PowerWork, error)
}

func (s *Server) powerRoutes() {
	s.handle("PUT /api/v1/machines/{id}/power", s.setPower)
	s.handle("GET /api/v1/machines/{id}/power", s.getPower, "live", "timeout")
	s.handle("DELETE /api/v1/machines/{id}/power", s.clearPower)
	s.handle("GET /api/v1/power-drivers", s.listPowerDrivers)
	for _, a := range []events.PowerAction{events.PowerOn, events.PowerOff, events.PowerCycle} {
		s.handle("POST /api/v1/machines/{id}/power/"+string(a), s.powerAction(a), "timeout")
	}
}

// powerRequest is what every power handler starts with: the machine's id
// from the path and the service. A mutation is in the machine's power
// audit trail, refused or not.
func (s *Server) powerRequest(r *http.Request) (string, Power, error) {
	machineID, err := PathUUID(r, "id")
	if err != nil {
		return "", nil, err
	}
	AuditNote(r.Context(), powerTarget(machineID), nil, nil)
	if s.power == nil {
		return machineID, nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "power control is not configured in this region")
	}
	return machineID, s.power, nil
}

func powerMeta(r *http.Request) power.Meta {
	return power.Meta{Actor: Actor(r.Context()), RequestID: RequestID(r.Context())}
}

func powerTarget(machineID string) string { return events.MachineStreamName(machineID) + "/power" }

func (s *Server) setPower(w http.ResponseWriter, r *http.Request) error {
	machineID, svc, err := s.powerRequest(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, power.MaxBody))
	if err != nil {
		return rackplane.Errorf(rackplane.EINVALID, "request body: over %d bytes, or not received in time", power.MaxBody)
	}
	req, err := power.ParseSetRequest(body)
	if err != nil {
		return err
	}
	before, after, err := svc.Set(r.Context(), machineID, req, powerMeta(r))
	if err != nil {
		if before != nil {
			AuditNote(r.Context(), powerTarget(machineID), *before, nil)
		}
		return err
	}
	// The audit holds what the API shows: no password, its fingerprint.
	if before != nil {
		AuditNote(r.Context(), powerTarget(machineID), *before, after)
	} else {
		AuditNote(r.Context(), powerTarget(machineID), nil, after)
	}
	return writeJSON(w, http.StatusOK, after)
}

// PowerView is GET /api/v1/machines/{id}/power: the parameters (no
// password) and the power state, asked of the rack now unless
// ?live=false.
type PowerView struct {
	postgres.PowerParameters
	// DrivingRackID is the rack that drives the machine: rack_id, else
	// the rack serving the subnet of the BMC's address, else the
	// machine's boot rack (null when none); DrivingRackReason says which.
	DrivingRackID     *string    `json:"driving_rack_id"`
	DrivingRackReason string     `json:"driving_rack_reason,omitempty"`
	PowerState        string     `json:"power_state"`
	PowerCheckedAt    *time.Time `json:"power_checked_at,omitempty"`
	PowerOutcome      string     `json:"power_outcome,omitempty"`
	PowerError        string     `json:"power_error,omitempty"`
	// Live says whether the state was asked of the rack by this request.
	Live bool `json:"live"`
	// Lifecycle is the region's power work for the machine's operation
	// (deploy: power on; release: power off): attempts, why the last
	// failed, when the next is due. Absent when there is none.
	Lifecycle *postgres.PowerWork `json:"lifecycle,omitempty"`
}

func (s *Server) getPower(w http.ResponseWriter, r *http.Request) error {
	machineID, svc, err := s.powerRequest(r)
	if err != nil {
		return err
	}
	live := true
	switch v := r.URL.Query().Get("live"); v {
	case "", "true", "1":
	case "false", "0":
		live = false
	default:
		return rackplane.Errorf(rackplane.EINVALID, "live must be true or false, not %q", clipMessage(v))
	}
	timeout, err := QueryDuration(r, "timeout", DefaultPowerTimeout, 10*time.Millisecond, MaxPowerTimeout)
	if err != nil {
		return err
	}
	p, err := svc.Get(r.Context(), machineID)
	if err != nil {
		return err
	}
	view := PowerView{PowerParameters: p, Live: live}
	if live {
		res, err := svc.Act(r.Context(), machineID, events.PowerStatus, timeout, powerMeta(r))
		if err != nil {
			return err
		}
		view.PowerState, view.PowerOutcome = res.State, res.Outcome
		now := time.Now().UTC()
		view.PowerCheckedAt = &now
	}
	m, err := s.machines.Get(r.Context(), machineID)
	if err != nil {
		return err
	}
	d, err := svc.DrivingRack(r.Context(), machineID)
	if err != nil {
		return err
	}
	if d.RackID != "" {
		view.DrivingRackID, view.DrivingRackReason = &d.RackID, d.Reason
	}
	if view.Lifecycle, err = svc.Work(r.Context(), machineID); err != nil {
		return err
	}
	if !live {
		view.PowerState, view.PowerCheckedAt, view.PowerOutcome, view.PowerError = m.PowerState, m.PowerCheckedAt, m.PowerOutcome, m.PowerError
	}
	return writeJSON(w, http.StatusOK, view)
}

func (s *Server) clearPower(w http.ResponseWriter, r *http.Request) error {
	machineID, svc, err := s.powerRequest(r)
	if err != nil {
		return err
	}
	old, err := svc.Clear(r.Context(), machineID, powerMeta(r))
	if err != nil {
		return err
	}
	AuditNote(r.Context(), powerTarget(machineID), old, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) powerAction(action events.PowerAction) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		machineID, svc, err := s.powerRequest(r)
		if err != nil {
			return err
		}
		timeout, err := QueryDuration(r, "timeout", DefaultPowerTimeout, 10*time.Millisecond, MaxPowerTimeout)
		if err != nil {
			return err
		}
		res, err := svc.Act(r.Context(), machineID, action, timeout, powerMeta(r))
		if res.RackID != "" {
			AuditNote(r.Context(), powerTarget(machineID), nil, res)
		}
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res)
	}
}

// listPowerDrivers shows the power drivers as the racks last reported
// them, unusable ones with the reason.
func (s *Server) listPowerDrivers(w http.ResponseWriter, r *http.Request) error {
	if s.power == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "power control is not configured in this region")
	}
	ds, err := s.power.Drivers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"power_drivers": ds})
}
