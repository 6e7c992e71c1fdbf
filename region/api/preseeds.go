package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
)

func (s *Server) preseedRoutes() {
	s.handle("POST /api/v1/preseeds", s.createPreseed)
	s.handle("GET /api/v1/preseeds", s.listPreseeds)
	s.handle("GET /api/v1/preseeds/{name}", s.getPreseed)
	s.handle("PUT /api/v1/preseeds/{name}", s.editPreseed)
	s.handle("GET /api/v1/preseeds/{name}/versions", s.listPreseedVersions)
	s.handle("GET /api/v1/preseeds/{name}/versions/{version}", s.getPreseedVersion)
	s.handle("GET /api/v1/preseeds/{name}/diff", s.diffPreseed)
	s.handle("POST /api/v1/preseeds/{name}/rollback", s.rollbackPreseed)
}

type preseedBody struct {
	Name    string               `json:"name"`
	Content string               `json:"content"`
	Scope   *events.PreseedScope `json:"scope"`
	Comment string               `json:"comment"`
}

func checkScope(sc events.PreseedScope) error {
	need := map[string][]string{
		"global": {}, "os": {"os"}, "os_release": {"os", "release"},
		"os_release_arch": {"os", "release", "arch"}, "machine": {"machine_id"},
	}
	fields, ok := need[sc.Kind]
	if !ok {
		return rackplane.Errorf(rackplane.EINVALID, "scope kind %q: want machine, os_release_arch, os_release, os or global", sc.Kind)
	}
	have := map[string]string{"os": sc.OS, "release": sc.Release, "arch": sc.Arch, "machine_id": sc.MachineID}
	for _, f := range fields {
		if have[f] == "" {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s needs %s", sc.Kind, strings.Join(fields, ", "))
		}
	}
	for f, v := range have {
		if v != "" && !contains(fields, f) {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s takes no %s", sc.Kind, f)
		}
		if v != "" && f != "machine_id" && !nameRE.MatchString(v) {
			return rackplane.Errorf(rackplane.EINVALID, "scope %s %q is not a name", f, v)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// emitPreseed appends a new version of a preseed at expected (the version
// it was edited from; 0 for a new preseed). The stream version is the
// preseed version, so a stale edit is a conflict: 412.
func (s *Server) emitPreseed(ctx context.Context, d events.PreseedVersionCreated, expected int64) error {
	ev, err := s.newEvent(ctx, events.TypePreseedVersionCreated, events.PreseedStreamName(d.Name), d)
	if err != nil {
		return err
	}
	err = s.db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := s.db.Emit(ctx, tx, ev.Subject, expected, ev)
		return err
	})
	var ce *postgres.ConflictError
	if errorsAs(err, &ce) {
		if expected == postgres.ExpectNoStream {
			return rackplane.WrapError(rackplane.ECONFLICT, err, "preseed %q exists already", d.Name)
		}
		return rackplane.WrapError(rackplane.EPRECONDITION, err, "preseed %q is no longer at version %d: someone else saved a new version; read it again", d.Name, expected)
	}
	return err
}

func (s *Server) createPreseed(w http.ResponseWriter, r *http.Request) error {
	var b preseedBody
	if err := DecodeJSON(r, &b); err != nil {
		return err
	}
	if !nameRE.MatchString(b.Name) {
		return rackplane.Errorf(rackplane.EINVALID, "name %q: want letters, digits, dot, dash, underscore; at most 64", b.Name)
	}
	sc := events.PreseedScope{Kind: "global"}
	if b.Scope != nil {
		sc = *b.Scope
	}
	if err := checkScope(sc); err != nil {
		return err
	}
	if err := preseed.Check(b.Name, b.Content); err != nil {
		return err
	}
	d := events.PreseedVersionCreated{Name: b.Name, Version: 1, Content: b.Content, Scope: sc, Origin: "operator",
		Author: Actor(r.Context()), Comment: b.Comment, Current: true}
	if err := s.emitPreseed(r.Context(), d, postgres.ExpectNoStream); err != nil {
		return err
	}
	AuditNote(r.Context(), events.PreseedStreamName(b.Name), nil, map[string]any{"version": 1, "scope": sc})
	w.Header().Set("ETag", etag(1))
	w.Header().Set("Location", "/api/v1/preseeds/"+b.Name)
	return s.writePreseed(w, r, http.StatusCreated, b.Name, 1)
}

func (s *Server) writePreseed(w http.ResponseWriter, r *http.Request, status int, name string, version int64) error {
	p, err := s.db.GetPreseed(r.Context(), name)
	if err != nil {
		return err
	}
	if version == 0 {
		version = p.CurrentVersion
	}
	v, err := s.db.GetPreseedVersion(r.Context(), name, version)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", etag(p.LatestVersion))
	return writeJSON(w, status, map[string]any{"preseed": p, "version": v})
}

func (s *Server) listPreseeds(w http.ResponseWriter, r *http.Request) error {
	ps, err := s.db.ListPreseeds(r.Context())
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
	if err := DecodeJSON(r, &b); err != nil {
		return err
	}
	base, err := ifMatch(r)
	if err != nil {
		return err
	}
	p, err := s.db.GetPreseed(r.Context(), name)
	if err != nil {
		return err
	}
	if b.Name != "" && b.Name != name {
		return rackplane.Errorf(rackplane.EINVALID, "a preseed cannot be renamed")
	}
	sc := p.Scope
	if b.Scope != nil {
		sc = *b.Scope
	}
	if err := checkScope(sc); err != nil {
		return err
	}
	if err := preseed.Check(name, b.Content); err != nil {
		return err
	}
	d := events.PreseedVersionCreated{Name: name, Version: base + 1, Content: b.Content, Scope: sc, Origin: "operator",
		Author: Actor(r.Context()), Comment: b.Comment, BasedOn: base, Current: true}
	if err := s.emitPreseed(r.Context(), d, base); err != nil {
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
	if err := DecodeJSON(r, &b); err != nil {
		return err
	}
	base, err := ifMatch(r)
	if err != nil {
		return err
	}
	p, err := s.db.GetPreseed(r.Context(), name)
	if err != nil {
		return err
	}
	old, err := s.db.GetPreseedVersion(r.Context(), name, b.Version)
	if err != nil {
		return err
	}
	comment := b.Comment
	if comment == "" {
		comment = fmt.Sprintf("rollback to version %d", b.Version)
	}
	d := events.PreseedVersionCreated{Name: name, Version: base + 1, Content: old.Content, Scope: p.Scope, Origin: "operator",
		Author: Actor(r.Context()), Comment: comment, BasedOn: b.Version, Current: true}
	if err := s.emitPreseed(r.Context(), d, base); err != nil {
		return err
	}
	AuditNote(r.Context(), events.PreseedStreamName(name), map[string]int64{"version": base}, map[string]int64{"version": base + 1, "content_of": b.Version})
	return s.writePreseed(w, r, http.StatusOK, name, base+1)
}

func (s *Server) listPreseedVersions(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if _, err := s.db.GetPreseed(r.Context(), name); err != nil {
		return err
	}
	vs, err := s.db.ListPreseedVersions(r.Context(), name)
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
	pv, err := s.db.GetPreseedVersion(r.Context(), r.PathValue("name"), v)
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
	a, err := s.db.GetPreseedVersion(r.Context(), name, from)
	if err != nil {
		return err
	}
	b, err := s.db.GetPreseedVersion(r.Context(), name, to)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/x-diff; charset=utf-8")
	_, err = fmt.Fprint(w, preseed.Diff(fmt.Sprintf("%s@%d (%s)", name, from, a.Author), fmt.Sprintf("%s@%d (%s)", name, to, b.Author), a.Content, b.Content))
	return err
}
