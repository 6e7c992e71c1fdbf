package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
)

// Machines is the machine lifecycle as the API uses it; package
// region/machine decides every change.
type Machines interface {
	Get(ctx context.Context, id string) (rackplane.Machine, error)
	List(ctx context.Context, f machine.Filter) ([]rackplane.Machine, error)
	Create(ctx context.Context, req machine.CreateRequest, meta machine.Meta) (rackplane.Machine, error)
	Update(ctx context.Context, id string, c machine.Change, meta machine.Meta) (machine.Result, error)
	Delete(ctx context.Context, id string, meta machine.Meta) (machine.Result, error)
	SetTags(ctx context.Context, id string, tags []string, meta machine.Meta) (machine.Result, error)
	Deploy(ctx context.Context, id string, req machine.DeployRequest, meta machine.Meta) (machine.Result, error)
	Commission(ctx context.Context, id string, meta machine.Meta) (machine.Result, error)
	Release(ctx context.Context, id string, req machine.ReleaseRequest, meta machine.Meta) (machine.Result, error)
	MarkFailed(ctx context.Context, id, reason string, meta machine.Meta) (machine.Result, error)
	MarkBroken(ctx context.Context, id, reason string, meta machine.Meta) (machine.Result, error)
	MarkFixed(ctx context.Context, id string, meta machine.Meta) (machine.Result, error)
}

func (s *Server) machineRoutes() {
	s.handle("POST /api/v1/machines", s.createMachine)
	s.handle("GET /api/v1/machines", s.listMachines, OwnQuery)
	s.handle("GET /api/v1/machines/{id}", s.getMachine)
	s.handle("PATCH /api/v1/machines/{id}", s.updateMachine)
	s.handle("DELETE /api/v1/machines/{id}", s.deleteMachine)
	s.handle("POST /api/v1/machines/{id}/deploy", s.deployMachine)
	// Commission takes no parameters: the region chooses the ephemeral
	// environment (machine.Service.Commission); a body, if any, is read
	// as the other actions' and ignored.
	s.handle("POST /api/v1/machines/{id}/commission", s.machineAction(func(ctx context.Context, id string, _ reasonRequest, meta machine.Meta) (machine.Result, error) {
		return s.machines.Commission(ctx, id, meta)
	}))
	s.handle("POST /api/v1/machines/{id}/release", s.machineAction(func(ctx context.Context, id string, req reasonRequest, meta machine.Meta) (machine.Result, error) {
		return s.machines.Release(ctx, id, machine.ReleaseRequest{PowerOff: req.PowerOff, Erase: req.Erase}, meta)
	}))
	s.handle("POST /api/v1/machines/{id}/mark-failed", s.machineAction(func(ctx context.Context, id string, req reasonRequest, meta machine.Meta) (machine.Result, error) {
		return s.machines.MarkFailed(ctx, id, req.Reason, meta)
	}))
	s.handle("POST /api/v1/machines/{id}/mark-broken", s.machineAction(func(ctx context.Context, id string, req reasonRequest, meta machine.Meta) (machine.Result, error) {
		return s.machines.MarkBroken(ctx, id, req.Reason, meta)
	}))
	s.handle("POST /api/v1/machines/{id}/mark-fixed", s.machineAction(func(ctx context.Context, id string, _ reasonRequest, meta machine.Meta) (machine.Result, error) {
		return s.machines.MarkFixed(ctx, id, meta)
	}))
}

type machineRequest struct {
	Hostname   *string   `json:"hostname"`
	MACs       *[]string `json:"macs"`
	Arch       *string   `json:"arch"`
	BootRackID *string   `json:"boot_rack_id"`
	BootFile   *string   `json:"boot_file"`
}

// meta says who asks, in which request, and at which version (If-Match).
func meta(r *http.Request) (machine.Meta, error) {
	m := machine.Meta{Actor: Actor(r.Context()), CorrelationID: RequestID(r.Context())}
	if im := r.Header.Get("If-Match"); im != "" {
		var v int64
		if _, err := fmt.Sscanf(strings.Trim(im, `"`), "%d", &v); err != nil {
			return m, rackplane.Errorf(rackplane.EINVALID, "If-Match %q: want the version from the ETag, such as \"3\"", im)
		}
		m.IfMatch = &v
	}
	return m, nil
}

func etag(v int64) string { return fmt.Sprintf(`"%d"`, v) }

func writeMachine(w http.ResponseWriter, status int, m rackplane.Machine) error {
	w.Header().Set("ETag", etag(m.Version))
	return writeRawJSON(w, status, func(b []byte) []byte {
		b = appendMachine(b, &m, "\n")
		return append(b, '\n')
	})
}

func (s *Server) createMachine(w http.ResponseWriter, r *http.Request) error {
	var req machineRequest
	if err := DecodeJSON(r, &req, "hostname", "macs"); err != nil {
		return err
	}
	var missing []string
	if req.Hostname == nil {
		missing = append(missing, `hostname (a host name such as "node1")`)
	}
	if req.MACs == nil {
		missing = append(missing, `macs (a list of MAC addresses such as ["52:54:00:12:34:56"])`)
	}
	if len(missing) > 0 {
		return rackplane.Errorf(rackplane.EINVALID, "%s required", strings.Join(missing, " and "))
	}
	c := machine.CreateRequest{Hostname: *req.Hostname, MACs: *req.MACs}
	if req.Arch != nil {
		c.Arch = *req.Arch
	}
	if req.BootRackID != nil {
		c.BootRackID = *req.BootRackID
	}
	if req.BootFile != nil {
		c.BootFile = *req.BootFile
	}
	md, err := meta(r)
	if err != nil {
		return err
	}
	m, err := s.machines.Create(r.Context(), c, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.MachineStreamName(m.ID), nil, machine.State(m))
	w.Header().Set("Location", "/api/v1/machines/"+m.ID)
	return writeMachine(w, http.StatusCreated, m)
}

func (s *Server) listMachines(w http.ResponseWriter, r *http.Request) error {
	f, err := machine.ParseFilter(r.URL.Query())
	if err != nil {
		return err
	}
	ms, err := s.machines.List(r.Context(), f)
	if err != nil {
		return err
	}
	if ms == nil {
		ms = []rackplane.Machine{}
	}
	next := ""
	if len(ms) == f.Limit {
		next = ms[len(ms)-1].Hostname
	}
	return writeRawJSON(w, http.StatusOK, func(b []byte) []byte { return appendMachinesPage(b, ms, next) })
}

// machineID returns the path's machine id; failed mutations are audited
// against the machine too.
func machineID(r *http.Request) (string, error) {
	id, err := PathUUID(r, "id")
	if err == nil {
		AuditNote(r.Context(), events.MachineStreamName(id), nil, nil)
	}
	return id, err
}

func (s *Server) getMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	m, err := s.machines.Get(r.Context(), id)
	if err != nil {
		return err
	}
	return writeMachine(w, http.StatusOK, m)
}

// statusNote is how the audit log shows a lifecycle change.
func statusNote(m rackplane.Machine) map[string]string {
	n := map[string]string{"status": m.Status}
	if m.StatusReason != "" {
		n["reason"] = m.StatusReason
	}
	return n
}

func (s *Server) updateMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	var req machineRequest
	if err := DecodeJSON(r, &req); err != nil {
		return err
	}
	md, err := meta(r)
	if err != nil {
		return err
	}
	res, err := s.machines.Update(r.Context(), id, machine.Change{Hostname: req.Hostname, MACs: req.MACs, Arch: req.Arch,
		BootRackID: req.BootRackID, BootFile: req.BootFile}, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.MachineStreamName(id), machine.State(res.Before), machine.State(res.After))
	return writeMachine(w, http.StatusOK, res.After)
}

func (s *Server) deleteMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	md, err := meta(r)
	if err != nil {
		return err
	}
	res, err := s.machines.Delete(r.Context(), id, md)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.MachineStreamName(id), machine.State(res.Before), nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deployRequest struct {
	OS           string   `json:"os"`
	Release      string   `json:"release"`
	Arch         string   `json:"arch"`
	Subarch      string   `json:"subarch"`
	Preseed      string   `json:"preseed"`
	KernelParams []string `json:"kernel_params"`
	// Disk is where a disk image goes: a disk's name, serial or by-id
	// path of the machine's inventory (default the largest).
	Disk string `json:"disk"`
}

func (s *Server) deployMachine(w http.ResponseWriter, r *http.Request) error {
	id, err := machineID(r)
	if err != nil {
		return err
	}
	var req deployRequest
	if err := DecodeJSON(r, &req, "os", "release"); err != nil {
		return err
	}
	md, err := meta(r)
	if err != nil {
		return err
	}
	res, err := s.machines.Deploy(r.Context(), id, machine.DeployRequest{OS: req.OS, Release: req.Release, Arch: req.Arch,
		Subarch: req.Subarch, Preseed: req.Preseed, KernelParams: req.KernelParams, Disk: req.Disk}, md)
	if err != nil {
		return err
	}
	m := res.After
	AuditNote(r.Context(), events.MachineStreamName(id), statusNote(res.Before), map[string]any{"status": m.Status, "os": m.OS,
		"release": m.Release, "arch": m.Arch, "image_version_id": m.ImageVersionID, "preseed_name": m.PreseedName,
		"preseed_version": m.PreseedVersion})
	return writeMachine(w, http.StatusOK, m)
}

type reasonRequest struct {
	Reason string `json:"reason"`
	// PowerOff is release's: whether the region switches the machine off
	// before it is ready (absent: the region's -release-power-off).
	PowerOff *bool `json:"power_off"`
	// Erase is release's too: none, quick or full (absent: the region's
	// -release-erase); machine.Service.Release refuses anything else.
	Erase string `json:"erase"`
}

// machineAction serves a lifecycle action whose body, if any, is a reason.
func (s *Server) machineAction(do func(ctx context.Context, id string, req reasonRequest, meta machine.Meta) (machine.Result, error)) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := machineID(r)
		if err != nil {
			return err
		}
		var req reasonRequest
		if r.ContentLength != 0 {
			if err := DecodeJSON(r, &req); err != nil {
				return err
			}
		}
		if len(req.Reason) > 1024 {
			return rackplane.Errorf(rackplane.EINVALID, "reason: at most 1024 bytes")
		}
		md, err := meta(r)
		if err != nil {
			return err
		}
		res, err := do(r.Context(), id, req, md)
		if err != nil {
			return err
		}
		AuditNote(r.Context(), events.MachineStreamName(id), statusNote(res.Before), statusNote(res.After))
		return writeMachine(w, http.StatusOK, res.After)
	}
}
