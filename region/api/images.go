package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// How long the image endpoints wait for the rack unless the request gives
// ?timeout=. Starting an import may wait behind other work on the rack,
// so it gets longer than the quick reads and removals.
const (
	DefaultImportStartTimeout = 30 * time.Second
	DefaultRackTimeout        = 5 * time.Second
	MaxRackTimeout            = 2 * time.Minute
)

func (s *Server) imageRoutes() {
	s.handle("GET /api/v1/racks/{id}/images", s.listRackImages)
	s.handle("DELETE /api/v1/racks/{id}/images/{version...}", s.deleteRackImage)
	s.handle("POST /api/v1/racks/{id}/images/gc", s.collectRackImages)
	s.handle("POST /api/v1/racks/{id}/images/imports", s.startRackImport)
	s.handle("GET /api/v1/racks/{id}/images/imports", s.listRackImports)
	s.handle("GET /api/v1/racks/{id}/images/imports/{import}", s.getRackImport)
}

// importRequest names exactly one source. SystemBootloaders is a pointer so
// that an explicit false reaches validation instead of vanishing.
type importRequest struct {
	URL               string `json:"url,omitempty"`
	Dir               string `json:"dir,omitempty"`
	SystemBootloaders *bool  `json:"system_bootloaders,omitempty"`
}

type importsRequest struct {
	ID string `json:"id,omitempty"`
}

type deleteRequest struct {
	VersionID string `json:"version_id"`
}

type gcRequest struct {
	DryRun bool `json:"dry_run"`
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
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	var out struct {
		Versions json.RawMessage `json:"versions"`
	}
	if err := s.imagesCall(r, rack, events.MethodImagesList, struct{}{}, DefaultRackTimeout, &out); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rackImagesResponse{RackID: rack.ID, Versions: out.Versions})
}

func (s *Server) startRackImport(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	req, err := decodeImportRequest(r)
	if err != nil {
		return err
	}
	s.logChange(r, rack, events.MethodImagesImport, "source_kind", sourceKind(req))
	var status json.RawMessage
	if err := s.imagesCall(r, rack, events.MethodImagesImport, req, DefaultImportStartTimeout, &status); err != nil {
		return err
	}
	var head struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(status, &head); err == nil && head.ID != "" {
		w.Header().Set("Location", "/api/v1/racks/"+rack.ID+"/images/imports/"+head.ID)
	}
	return writeJSON(w, http.StatusAccepted, status)
}

func (s *Server) listRackImports(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	var out struct {
		Imports []json.RawMessage `json:"imports"`
	}
	if err := s.imagesCall(r, rack, events.MethodImagesImports, importsRequest{}, DefaultRackTimeout, &out); err != nil {
		return err
	}
	if out.Imports == nil {
		out.Imports = []json.RawMessage{}
	}
	return writeJSON(w, http.StatusOK, rackImportsResponse{RackID: rack.ID, Imports: out.Imports})
}

func (s *Server) getRackImport(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	id := r.PathValue("import")
	var out struct {
		Imports []json.RawMessage `json:"imports"`
	}
	if err := s.imagesCall(r, rack, events.MethodImagesImports, importsRequest{ID: id}, DefaultRackTimeout, &out); err != nil {
		return err
	}
	if len(out.Imports) != 1 {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "rack %s answered with %d imports for import %s, want 1", rack.ID, len(out.Imports), id)
	}
	return writeJSON(w, http.StatusOK, out.Imports[0])
}

func (s *Server) deleteRackImage(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	version := r.PathValue("version")
	s.logChange(r, rack, events.MethodImagesDelete, "version_id", clipMessage(version))
	var report json.RawMessage
	if err := s.imagesCall(r, rack, events.MethodImagesDelete, deleteRequest{VersionID: version}, DefaultRackTimeout, &report); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

func (s *Server) collectRackImages(w http.ResponseWriter, r *http.Request) error {
	rack, err := s.imageRack(r)
	if err != nil {
		return err
	}
	var req gcRequest
	switch v := r.URL.Query().Get("dry_run"); v {
	case "", "false", "0":
	case "true", "1":
		req.DryRun = true
	default:
		return rackplane.Errorf(rackplane.EINVALID, "dry_run must be true or false, not %q", clipMessage(v))
	}
	s.logChange(r, rack, events.MethodImagesGC, "dry_run", req.DryRun)
	var report json.RawMessage
	if err := s.imagesCall(r, rack, events.MethodImagesGC, req, DefaultRackTimeout, &report); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, report)
}

// logChange records who asked a rack's image store for a change. The
// rack's request schemas have no room for who asked, so the region's log
// says it until the audit log does.
func (s *Server) logChange(r *http.Request, rack rackplane.Rack, method string, attrs ...any) {
	s.log.Info("image store change requested", append([]any{"rack_id", rack.ID, "method", method,
		"actor", Actor(r.Context()), "request_id", RequestID(r.Context())}, attrs...)...)
}

// sourceKind names an import's source without its address, which may
// carry credentials.
func sourceKind(req importRequest) string {
	switch {
	case req.URL != "":
		return "url"
	case req.Dir != "":
		return "dir"
	default:
		return "system_bootloaders"
	}
}

// imageRack is the rack named by the path, which the region must know.
func (s *Server) imageRack(r *http.Request) (rackplane.Rack, error) {
	id, err := PathUUID(r, "id")
	if err != nil {
		return rackplane.Rack{}, err
	}
	return s.db.GetRack(r.Context(), id)
}

// imagesCall asks rack's image store. The request is checked against the
// method's schema before it leaves, so bad input is a 400 even while the
// rack is away; the reply is checked after, as any outside input. Errors
// the rack answers with (not found, conflict, invalid) pass through.
func (s *Server) imagesCall(r *http.Request, rack rackplane.Rack, method string, req any, def time.Duration, out any) error {
	timeout, err := rackTimeout(r, def)
	if err != nil {
		return err
	}
	body, err := encodeRequest(method, events.ImagesRPCSchema(method, events.PartRequest), req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var raw json.RawMessage
	err = rpc.Call(ctx, s.nc, events.RackRPCSubject(rack.ID, method), json.RawMessage(body), &raw)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if !rack.Online {
			return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) is offline since %s: its image store cannot be reached until it is back",
				rack.ID, rack.Name, rack.StatusChangedAt.UTC().Format(time.RFC3339))
		}
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) does not answer: it is not connected to NATS (it may have just stopped)", rack.ID, rack.Name)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return rackplane.WrapError(rackplane.ETIMEOUT, err, "rack %s (%s) did not answer %s within %s; it may be busy: retry, or give a longer ?timeout=", rack.ID, rack.Name, method, timeout)
	case err != nil:
		return err
	}
	return s.decodeReply(rack, method, events.ImagesRPCSchema(method, events.PartReply), raw, out)
}

// decodeReply checks a rack's reply to method against its schema, as any
// outside input, and decodes it into out.
func (s *Server) decodeReply(rack rackplane.Rack, method, schemaName string, raw json.RawMessage, out any) error {
	set, err := schema.Default()
	if err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "load schemas")
	}
	if err := set.ValidateJSON(schemaName, raw); err != nil {
		s.log.Warn("rack answered with an invalid reply", "rack_id", rack.ID, "method", method, "err", err)
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s answered %s with a reply that breaks its schema; is it running a compatible version?", rack.ID, method)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "decode rack %s's %s reply", rack.ID, method)
	}
	return nil
}

// decodeImportRequest reads an import's source from the request body.
func decodeImportRequest(r *http.Request) (importRequest, error) {
	var req importRequest
	if err := DecodeJSON(r, &req); err != nil {
		return req, err
	}
	if n := countSet(req.URL != "", req.Dir != "", req.SystemBootloaders != nil); n != 1 {
		return req, rackplane.Errorf(rackplane.EINVALID, "give exactly one of url, dir and system_bootloaders (got %d)", n)
	}
	return req, nil
}

// encodeRequest is req as the rack receives it, checked against the
// method's request schema (schemaName).
func encodeRequest(method, schemaName string, req any) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EINTERNAL, err, "encode %s request", method)
	}
	set, err := schema.Default()
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EINTERNAL, err, "load schemas")
	}
	if err := set.ValidateJSON(schemaName, body); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "invalid %s request: %s", method, schemaProblem(err))
	}
	return body, nil
}

func rackTimeout(r *http.Request, def time.Duration) (time.Duration, error) {
	return QueryDuration(r, "timeout", def, 10*time.Millisecond, MaxRackTimeout)
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

// schemaProblem is a validation error on one line, short enough for a
// response.
func schemaProblem(err error) string {
	return clipMessage(strings.ReplaceAll(err.Error(), "\n", "; "))
}

func clipMessage(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
