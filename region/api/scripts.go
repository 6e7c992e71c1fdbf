package api

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/scripts"
)

// Scripts keeps commissioning scripts (scripts.Service).
type Scripts interface {
	List(ctx context.Context) ([]postgres.CommissioningScript, error)
	Get(ctx context.Context, name string) (postgres.CommissioningScript, error)
	Create(ctx context.Context, sc scripts.Script, meta scripts.Meta) error
	Replace(ctx context.Context, sc scripts.Script, meta scripts.Meta) error
	Delete(ctx context.Context, name string, meta scripts.Meta) error
	Results(ctx context.Context, machineID string) (postgres.ScriptResults, error)
}

func (s *Server) scriptRoutes() {
	s.handle("GET /api/v1/commissioning-scripts", s.listScripts)
	s.handle("POST /api/v1/commissioning-scripts", s.createScript)
	s.handle("GET /api/v1/commissioning-scripts/{name}", s.getScript)
	s.handle("PUT /api/v1/commissioning-scripts/{name}", s.replaceScript)
	s.handle("DELETE /api/v1/commissioning-scripts/{name}", s.deleteScript)
	s.handle("GET /api/v1/machines/{id}/commissioning", s.commissioningResults)
}

func (s *Server) scriptStore() (Scripts, error) {
	if s.scripts == nil {
		return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "commissioning scripts are not served by this region")
	}
	return s.scripts, nil
}

func scriptMeta(r *http.Request) scripts.Meta {
	return scripts.Meta{Actor: Actor(r.Context()), CorrelationID: RequestID(r.Context())}
}

// scriptAudit is what the audit log keeps of a script: its digest, not
// its text (the event has that).
func scriptAudit(sc scripts.Script) map[string]any {
	return map[string]any{"sha256": events.ScriptSHA256(sc.Content), "timeout_seconds": sc.TimeoutSeconds}
}

func (s *Server) listScripts(w http.ResponseWriter, r *http.Request) error {
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	list, err := st.List(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"scripts": list})
}

func (s *Server) getScript(w http.ResponseWriter, r *http.Request) error {
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	sc, err := st.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, sc)
}

func (s *Server) createScript(w http.ResponseWriter, r *http.Request) error {
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	var b scripts.Script
	if err := DecodeJSON(r, &b, "name", "content"); err != nil {
		return err
	}
	if err := scripts.Check(&b); err != nil {
		return err
	}
	AuditNote(r.Context(), events.CommissioningScriptStreamName(b.Name), nil, nil)
	if err := st.Create(r.Context(), b, scriptMeta(r)); err != nil {
		return err
	}
	AuditNote(r.Context(), events.CommissioningScriptStreamName(b.Name), nil, scriptAudit(b))
	w.Header().Set("Location", "/api/v1/commissioning-scripts/"+b.Name)
	return s.writeScript(w, r, st, http.StatusCreated, b.Name)
}

func (s *Server) writeScript(w http.ResponseWriter, r *http.Request, st Scripts, status int, name string) error {
	sc, err := st.Get(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, status, sc)
}

func (s *Server) replaceScript(w http.ResponseWriter, r *http.Request) error {
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	AuditNote(r.Context(), events.CommissioningScriptStreamName(name), nil, nil)
	var b scripts.Script
	if err := DecodeJSON(r, &b, "content"); err != nil {
		return err
	}
	if b.Name != "" && b.Name != name {
		return rackplane.Errorf(rackplane.EINVALID, "name %.80q: a script cannot be renamed (it is %q)", b.Name, name)
	}
	b.Name = name
	if err := scripts.Check(&b); err != nil {
		return err
	}
	old, err := st.Get(r.Context(), name)
	if err != nil {
		return err
	}
	if err := st.Replace(r.Context(), b, scriptMeta(r)); err != nil {
		return err
	}
	AuditNote(r.Context(), events.CommissioningScriptStreamName(name),
		map[string]any{"sha256": old.SHA256, "timeout_seconds": old.TimeoutSeconds}, scriptAudit(b))
	return s.writeScript(w, r, st, http.StatusOK, name)
}

func (s *Server) deleteScript(w http.ResponseWriter, r *http.Request) error {
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	AuditNote(r.Context(), events.CommissioningScriptStreamName(name), nil, nil)
	old, err := st.Get(r.Context(), name)
	if err != nil {
		return err
	}
	if err := st.Delete(r.Context(), name, scriptMeta(r)); err != nil {
		return err
	}
	AuditNote(r.Context(), events.CommissioningScriptStreamName(name), map[string]any{"sha256": old.SHA256}, nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) commissioningResults(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	st, err := s.scriptStore()
	if err != nil {
		return err
	}
	res, err := st.Results(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}
