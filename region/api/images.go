package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/rackimages"
)

// RackImages is a rack's image store as the API uses it; package
// region/rackimages asks the rack.
type RackImages interface {
	Rack(ctx context.Context, id string) (rackplane.Rack, error)
	List(ctx context.Context, rack rackplane.Rack, timeout time.Duration) (json.RawMessage, error)
	Import(ctx context.Context, rack rackplane.Rack, req rackimages.ImportRequest, timeout time.Duration, m rackimages.Meta) (json.RawMessage, string, error)
	Imports(ctx context.Context, rack rackplane.Rack, timeout time.Duration) ([]json.RawMessage, error)
	GetImport(ctx context.Context, rack rackplane.Rack, id string, timeout time.Duration) (json.RawMessage, error)
	Delete(ctx context.Context, rack rackplane.Rack, version string, timeout time.Duration, m rackimages.Meta) (json.RawMessage, error)
	GC(ctx context.Context, rack rackplane.Rack, dryRun bool, timeout time.Duration, m rackimages.Meta) (json.RawMessage, error)
	Scrub(ctx context.Context, rack rackplane.Rack, timeout time.Duration, m rackimages.Meta) (json.RawMessage, error)
}

func (s *Server) imageRoutes() {
	s.handle("GET /api/v1/racks/{id}/images", s.listRackImages, "timeout")
	s.handle("DELETE /api/v1/racks/{id}/images/{version...}", s.deleteRackImage, "timeout")
	s.handle("POST /api/v1/racks/{id}/images/gc", s.collectRackImages, "dry_run", "timeout")
	s.handle("POST /api/v1/racks/{id}/images/scrub", s.scrubRackImages, "timeout")
	s.handle("POST /api/v1/racks/{id}/images/imports", s.startRackImport, "timeout")
	s.handle("GET /api/v1/racks/{id}/images/imports", s.listRackImports, "timeout")
	s.handle("GET /api/v1/racks/{id}/images/imports/{import}", s.getRackImport, "timeout")
}

type rackImagesResponse struct {
	RackID   string          `json:"rack_id"`
	Versions json.RawMessage `json:"versions"`
}

type rackImportsResponse struct {
	RackID  string            `json:"rack_id"`
	Imports []json.RawMessage `json:"imports"`
}

func (s *Server) listRackImages(w http.ResponseWriter, r *http.Request) error {
	rack, timeout, err := s.imageRack(r, rackimages.DefaultRackTimeout)
	if err != nil {
		return err
	}
	versions, err := s.rackImages.List(r.Context(), rack, timeout)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rackImagesResponse{RackID: rack.ID, Versions: versions})
}

func (s *Server) startRackImport(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.pathRack(r)
	if err != nil {
		return err
	}
	req, err := decodeImportRequest(r)
	if err != nil {
		return err
	}
	timeout, err := rackTimeout(r, rackimages.DefaultImportStartTimeout)
	if err != nil {
		return err
	}
	status, id, err := s.rackImages.Import(r.Context(), rack, req, timeout, imagesMeta(r))
	if err != nil {
		return err
	}
	if id != "" {
		w.Header().Set("Location", "/api/v1/racks/"+rack.ID+"/images/imports/"+id)
	}
	return writeJSON(w, http.StatusAccepted, status)
}

func (s *Server) listRackImports(w http.ResponseWriter, r *http.Request) error {
	rack, timeout, err := s.imageRack(r, rackimages.DefaultRackTimeout)
	if err != nil {
		return err
	}
	imports, err := s.rackImages.Imports(r.Context(), rack, timeout)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rackImportsResponse{RackID: rack.ID, Imports: imports})
}

func (s *Server) getRackImport(w http.ResponseWriter, r *http.Request) error {
	rack, timeout, err := s.imageRack(r, rackimages.DefaultRackTimeout)
	if err != nil {
		return err
	}
	status, err := s.rackImages.GetImport(r.Context(), rack, r.PathValue("import"), timeout)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, status)
}

func (s *Server) deleteRackImage(w http.ResponseWriter, r *http.Request) error {
	rack, timeout, err := s.imageRack(r, rackimages.DefaultRackTimeout)
	if err != nil {
		return err
	}
	report, err := s.rackImages.Delete(r.Context(), rack, r.PathValue("version"), timeout, imagesMeta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

func (s *Server) collectRackImages(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.pathRack(r)
	if err != nil {
		return err
	}
	var dryRun bool
	switch v := r.URL.Query().Get("dry_run"); v {
	case "", "false", "0":
	case "true", "1":
		dryRun = true
	default:
		return rackplane.Errorf(rackplane.EINVALID, "dry_run must be true or false, not %q", clipMessage(v))
	}
	timeout, err := rackTimeout(r, rackimages.DefaultRackTimeout)
	if err != nil {
		return err
	}
	report, err := s.rackImages.GC(r.Context(), rack, dryRun, timeout, imagesMeta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

// scrubRackImages has the rack verify every stored file; a corrupt one is
// quarantined there and the versions using it become unusable.
func (s *Server) scrubRackImages(w http.ResponseWriter, r *http.Request) error {
	rack, timeout, err := s.imageRack(r, rackimages.DefaultScrubTimeout)
	if err != nil {
		return err
	}
	report, err := s.rackImages.Scrub(r.Context(), rack, timeout, imagesMeta(r))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

// imagesMeta says who asks, for the region's log of image store changes.
func imagesMeta(r *http.Request) rackimages.Meta {
	return rackimages.Meta{Actor: Actor(r.Context()), RequestID: RequestID(r.Context())}
}

// pathRack is the rack named by the path, which the region must know.
func (s *Server) pathRack(r *http.Request) (rackplane.Rack, error) {
	id, err := PathUUID(r, "id")
	if err != nil {
		return rackplane.Rack{}, err
	}
	return s.rackImages.Rack(r.Context(), id)
}

// imageRack is the path's rack and the request's ?timeout= (def when
// absent), for the endpoints with no body or query of their own.
func (s *Server) imageRack(r *http.Request, def time.Duration) (rackplane.Rack, time.Duration, error) {
	rack, err := s.pathRack(r)
	if err != nil {
		return rack, 0, err
	}
	timeout, err := rackTimeout(r, def)
	return rack, timeout, err
}

// decodeImportRequest reads an import's source from the request body.
func decodeImportRequest(r *http.Request) (rackimages.ImportRequest, error) {
	var req rackimages.ImportRequest
	if err := DecodeJSON(r, &req); err != nil {
		return req, err
	}
	if n := countSet(req.URL != "", req.Dir != "", req.SystemBootloaders != nil, req.DebianNetboot != nil, req.Simplestreams != nil); n != 1 {
		return req, rackplane.Errorf(rackplane.EINVALID, "give exactly one of url, dir, system_bootloaders, debian_netboot and simplestreams (got %d)", n)
	}
	// The rack reads the directory, from a working directory of its own:
	// only an absolute path means the same to the client and the rack.
	for name, dir := range map[string]string{"dir": req.Dir, "simplestreams.dir": simplestreamsDir(req)} {
		if dir != "" && !strings.HasPrefix(dir, "/") {
			return req, rackplane.Errorf(rackplane.EINVALID, "%s %.200q: want an absolute path of a directory on the rack, such as /srv/images", name, dir)
		}
	}
	return req, nil
}

func simplestreamsDir(req rackimages.ImportRequest) string {
	if req.Simplestreams == nil {
		return ""
	}
	return req.Simplestreams.Dir
}

func rackTimeout(r *http.Request, def time.Duration) (time.Duration, error) {
	return QueryDuration(r, "timeout", def, 10*time.Millisecond, rackimages.MaxRackTimeout)
}

func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

func clipMessage(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
