package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
)

// Preseeds keeps preseed versions (preseed.Service).
type Preseeds interface {
	Get(ctx context.Context, name string) (postgres.Preseed, error)
	List(ctx context.Context) ([]postgres.Preseed, error)
	Version(ctx context.Context, name string, v int64) (postgres.PreseedVersion, error)
	Versions(ctx context.Context, name string) ([]postgres.PreseedVersion, error)
	Create(ctx context.Context, name, content, format string, scope *events.PreseedScope, comment string, meta preseed.Meta) error
	Edit(ctx context.Context, name string, base int64, content, format string, scope *events.PreseedScope, comment string, meta preseed.Meta) error
	Rollback(ctx context.Context, name string, base, to int64, comment string, meta preseed.Meta) error
}

func (s *Server) preseedRoutes() {
	s.handle("POST /api/v1/preseeds", s.createPreseed)
	s.handle("GET /api/v1/preseeds", s.listPreseeds)
	s.handle("GET /api/v1/preseeds/{name}", s.getPreseed)
	s.handle("PUT /api/v1/preseeds/{name}", s.editPreseed)
	s.handle("GET /api/v1/preseeds/{name}/versions", s.listPreseedVersions)
	s.handle("GET /api/v1/preseeds/{name}/versions/{version}", s.getPreseedVersion)
	s.handle("GET /api/v1/preseeds/{name}/diff", s.diffPreseed, "from", "to")
	s.handle("POST /api/v1/preseeds/{name}/rollback", s.rollbackPreseed)
}

type preseedBody struct {
	Name    string `json:"name"`
	Content string `json:"content"`
	// Format is the content's format; absent: detected from it.
	Format  string               `json:"format"`
	Scope   *events.PreseedScope `json:"scope"`
	Comment string               `json:"comment"`
}

func preseedMeta(r *http.Request) preseed.Meta {
	return preseed.Meta{Actor: Actor(r.Context()), CorrelationID: RequestID(r.Context())}
}

func (s *Server) createPreseed(w http.ResponseWriter, r *http.Request) error {
	var b preseedBody
	if err := DecodeJSON(r, &b, "name", "content"); err != nil {
		return err
	}
	if err := s.preseeds.Create(r.Context(), b.Name, b.Content, b.Format, b.Scope, b.Comment, preseedMeta(r)); err != nil {
		return err
	}
	p, err := s.preseeds.Get(r.Context(), b.Name)
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.PreseedStreamName(b.Name), nil, map[string]any{"version": 1, "scope": p.Scope})
	w.Header().Set("ETag", etag(1))
	w.Header().Set("Location", "/api/v1/preseeds/"+b.Name)
	return s.writePreseed(w, r, http.StatusCreated, b.Name, 1)
}

func (s *Server) writePreseed(w http.ResponseWriter, r *http.Request, status int, name string, version int64) error {
	p, err := s.preseeds.Get(r.Context(), name)
	if err != nil {
		return err
	}
	if version == 0 {
		version = p.CurrentVersion
	}
	v, err := s.preseeds.Version(r.Context(), name, version)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(p.LatestVersion))
	return writeJSON(w, status, map[string]any{"preseed": p, "version": v})
}

func (s *Server) listPreseeds(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.preseeds.List(r.Context())
	if err != nil {
		return err
	}
	if ps == nil {
		ps = []postgres.Preseed{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"preseeds": ps})
}

func (s *Server) getPreseed(w http.ResponseWriter, r *http.Request) error {
	return s.writePreseed(w, r, http.StatusOK, r.PathValue("name"), 0)
}

// ifMatch returns the version an edit was made from. It is required: an
// edit that does not say what it edits could silently undo another.
func ifMatch(r *http.Request) (int64, error) {
	im := strings.Trim(r.Header.Get("If-Match"), `" `)
	if im == "" {
		return 0, rackplane.Errorf(rackplane.EPRECONDITION, "If-Match is required: send the version you edited (the ETag of GET)")
	}
	v, err := strconv.ParseInt(strings.TrimPrefix(im, "W/"), 10, 64)
	if err != nil || v < 1 {
		return 0, rackplane.Errorf(rackplane.EINVALID, "If-Match %q: want a version such as \"3\"", im)
	}
	return v, nil
}

func (s *Server) editPreseed(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	AuditNote(r.Context(), events.PreseedStreamName(name), nil, nil)
	var b preseedBody
	if err := DecodeJSON(r, &b, "content"); err != nil {
		return err
	}
	base, err := ifMatch(r)
	if err != nil {
		return err
	}
	if b.Name != "" && b.Name != name {
		return rackplane.Errorf(rackplane.EINVALID, "a preseed cannot be renamed")
	}
	if err := s.preseeds.Edit(r.Context(), name, base, b.Content, b.Format, b.Scope, b.Comment, preseedMeta(r)); err != nil {
		return err
	}
	AuditNote(r.Context(), events.PreseedStreamName(name), map[string]int64{"version": base}, map[string]int64{"version": base + 1})
	return s.writePreseed(w, r, http.StatusOK, name, base+1)
}

func (s *Server) rollbackPreseed(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	AuditNote(r.Context(), events.PreseedStreamName(name), nil, nil)
	var b struct {
		Version int64  `json:"version"`
		Comment string `json:"comment"`
	}
	if err := DecodeJSON(r, &b, "version"); err != nil {
		return err
	}
	base, err := ifMatch(r)
	if err != nil {
		return err
	}
	if err := s.preseeds.Rollback(r.Context(), name, base, b.Version, b.Comment, preseedMeta(r)); err != nil {
		return err
	}
	AuditNote(r.Context(), events.PreseedStreamName(name), map[string]int64{"version": base}, map[string]int64{"version": base + 1, "content_of": b.Version})
	return s.writePreseed(w, r, http.StatusOK, name, base+1)
}

func (s *Server) listPreseedVersions(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	vs, err := s.preseeds.Versions(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"versions": vs})
}

func pathVersion(r *http.Request, v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, rackplane.Errorf(rackplane.EINVALID, "version %q: want a whole number from 1", v)
	}
	return n, nil
}

func (s *Server) getPreseedVersion(w http.ResponseWriter, r *http.Request) error {
	v, err := pathVersion(r, r.PathValue("version"))
	if err != nil {
		return err
	}
	pv, err := s.preseeds.Version(r.Context(), r.PathValue("name"), v)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, pv)
}

func (s *Server) diffPreseed(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	from, err := pathVersion(r, r.URL.Query().Get("from"))
	if err != nil {
		return err
	}
	to, err := pathVersion(r, r.URL.Query().Get("to"))
	if err != nil {
		return err
	}
	a, err := s.preseeds.Version(r.Context(), name, from)
	if err != nil {
		return err
	}
	b, err := s.preseeds.Version(r.Context(), name, to)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/x-diff; charset=utf-8")
	_, err = fmt.Fprint(w, preseed.Diff(fmt.Sprintf("%s@%d (%s)", name, from, a.Author), fmt.Sprintf("%s@%d (%s)", name, to, b.Author), a.Content, b.Content))
	return err
}
