package api

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Hardware reads machines' hardware, as racks reported their
// commissioning agents' inventories (*postgres.DB).
type Hardware interface {
	GetHardware(ctx context.Context, id string) (postgres.Hardware, error)
	HardwareHistory(ctx context.Context, id string, limit int) ([]postgres.HardwareReport, error)
}

func (s *Server) hardwareRoutes() {
	s.handle("GET /api/v1/machines/{id}/hardware", s.getHardware)
	s.handle("GET /api/v1/machines/{id}/hardware/history", s.hardwareHistory, "limit")
	s.handle("PUT /api/v1/machines/{id}/tags", s.setTags)
}

func (s *Server) hardwareStore() (Hardware, error) {
	if s.hardware == nil {
		return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "hardware inventories are not served by this region")
	}
	return s.hardware, nil
}

func (s *Server) getHardware(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	hw, err := s.hardwareStore()
	if err != nil {
		return err
	}
	h, err := hw.GetHardware(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, h)
}

func (s *Server) hardwareHistory(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	limit, err := QueryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		return err
	}
	hw, err := s.hardwareStore()
	if err != nil {
		return err
	}
	reports, err := hw.HardwareHistory(r.Context(), id, limit)
	if err != nil {
		return err
	}
	if reports == nil {
		reports = []postgres.HardwareReport{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"machine_id": id, "reports": reports})
}

type tagsRequest struct {
	Tags *[]string `json:"tags"`
}

// setTags replaces a machine's tags; If-Match pins the version, as for
// every change of a machine.
func (s *Server) setTags(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	var req tagsRequest
	if err := DecodeJSON(r, &req, "tags"); err != nil {
		return err
	}
	if req.Tags == nil {
		return rackplane.Errorf(rackplane.EINVALID, `tags is required: {"tags": ["gpu", ...]}, [] for none`)
	}
	md, err := meta(r)
	if err != nil {
		return err
	}
	res, err := s.machines.SetTags(r.Context(), id, *req.Tags, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.MachineStreamName(id), map[string]any{"tags": res.Before.Tags}, map[string]any{"tags": res.After.Tags})
	return writeMachine(w, http.StatusOK, res.After)
}
