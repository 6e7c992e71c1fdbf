package api

import (
	"context"
	"net/http"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/volume"
)

// How long the volume endpoints wait for the rack unless the request gives
// ?timeout=. Create, grow and snapshot run provider scripts that may copy
// or allocate; the others only map, unmap, open, close or check.
const (
	DefaultVolumeSlowTimeout = 5 * time.Minute
	DefaultVolumeTimeout     = time.Minute
	MaxVolumeTimeout         = 30 * time.Minute
)

// Volumes runs machines' external storage (volume.Service).
type Volumes interface {
	Create(ctx context.Context, machineID string, req volume.CreateRequest, timeout time.Duration, meta volume.Meta) (before, after postgres.Volume, err error)
	List(ctx context.Context, machineID string, withRemoved bool) ([]postgres.Volume, error)
	Get(ctx context.Context, id string) (postgres.Volume, error)
	Act(ctx context.Context, id string, action events.StorageAction, body volume.ActionRequest, timeout time.Duration) (before, after postgres.Volume, err error)
	Providers(ctx context.Context) ([]volume.Provider, error)
}

func (s *Server) volumeRoutes() {
	s.handle("POST /api/v1/machines/{id}/volumes", s.createVolume, "timeout")
	s.handle("GET /api/v1/machines/{id}/volumes", s.listVolumes, "removed")
	s.handle("GET /api/v1/volumes/{vid}", s.getVolume)
	s.handle("GET /api/v1/storage-providers", s.listStorageProviders)
	s.handle("DELETE /api/v1/volumes/{vid}", s.volumeAction(events.StorageActionRemove, DefaultVolumeTimeout), "timeout")
	s.handle("POST /api/v1/volumes/{vid}/grow", s.volumeAction(events.StorageActionGrow, DefaultVolumeSlowTimeout), "timeout")
	s.handle("POST /api/v1/volumes/{vid}/snapshot", s.volumeAction(events.StorageActionSnapshot, DefaultVolumeSlowTimeout), "timeout")
	for _, a := range []events.StorageAction{events.StorageActionAttach, events.StorageActionDetach, events.StorageActionSetinfo, events.StorageActionVerify,
		events.StorageActionOpen, events.StorageActionClose} {
		s.handle("POST /api/v1/volumes/{vid}/"+string(a), s.volumeAction(a, DefaultVolumeTimeout), "timeout")
	}
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
	var req volume.CreateRequest
	if err := DecodeJSON(r, &req, "provider", "size_mib"); err != nil {
		return err
	}
	// Until there is a volume, a refusal is the machine's.
	AuditNote(r.Context(), events.MachineStreamName(machineID)+"/volumes", nil, map[string]any{"provider": req.Provider, "size_mib": req.SizeMiB})
	if err := req.Check(); err != nil {
		return err
	}
	timeout, err := volumeTimeout(r, DefaultVolumeSlowTimeout)
	if err != nil {
		return err
	}
	before, v, err := s.volumes.Create(r.Context(), machineID, req, timeout, volume.Meta{Actor: Actor(r.Context()), RequestID: RequestID(r.Context())})
	if before.ID != "" {
		AuditNote(r.Context(), events.VolumeStreamName(before.ID), nil, summary(before))
	}
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.VolumeStreamName(v.ID), nil, summary(v))
	w.Header().Set("Location", "/api/v1/volumes/"+v.ID)
	return writeJSON(w, http.StatusCreated, v)
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
	vs, err := s.volumes.List(r.Context(), machineID, withRemoved)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"volumes": vs})
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request) error {
	vid, err := PathUUID(r, "vid")
	if err != nil {
		return err
	}
	v, err := s.volumes.Get(r.Context(), vid)
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
		var body volume.ActionRequest
		if r.ContentLength != 0 {
			if err := DecodeJSON(r, &body); err != nil {
				return err
			}
		}
		timeout, err := volumeTimeout(r, def)
		if err != nil {
			return err
		}
		before, after, err := s.volumes.Act(r.Context(), vid, action, body, timeout)
		if before.ID != "" {
			AuditNote(r.Context(), events.VolumeStreamName(vid), summary(before), nil)
		}
		if err != nil {
			return err
		}
		AuditNote(r.Context(), events.VolumeStreamName(vid), summary(before), summary(after))
		return writeJSON(w, http.StatusOK, after)
	}
}

// volumeTimeout is ?timeout=, or def.
func volumeTimeout(r *http.Request, def time.Duration) (time.Duration, error) {
	return QueryDuration(r, "timeout", def, 10*time.Millisecond, MaxVolumeTimeout)
}

// listStorageProviders shows the providers as the racks last reported
// them, invalid ones with the reason, so an operator sees why a provider
// they installed is not offered.
func (s *Server) listStorageProviders(w http.ResponseWriter, r *http.Request) error {
	out, err := s.volumes.Providers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"storage_providers": out})
}
