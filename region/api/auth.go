package api

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// authenticate returns the actor of the request's bearer token.
func (s *Server) authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || token == "" {
		return "", rackplane.Errorf(rackplane.EUNAUTHORIZED, "an API token is needed: send Authorization: Bearer <token>")
	}
	t, err := s.tokens.Authenticate(r.Context(), strings.TrimSpace(token), time.Now())
	if err != nil {
		return "", err
	}
	return t.Actor, nil
}

// auditNote is what a handler tells the audit log beyond what the edge
// knows: the target in its own terms and a short before and after.
type auditNote struct {
	target        string
	before, after any
}

// AuditNote records, for the audit log, what a mutation acted on and the
// state before and after (kept short: the changed fields, not whole
// documents). Outside a mutation it does nothing.
func AuditNote(ctx context.Context, target string, before, after any) {
	if info := infoOf(ctx); info != nil && info.audit != nil {
		info.audit.target, info.audit.before, info.audit.after = target, before, after
	}
}

func (s *Server) audit(r *http.Request, pattern string, status int, n *auditNote, herr error) {
	e := postgres.AuditEntry{
		Actor: Actor(r.Context()), Action: pattern, Target: n.target, RequestID: RequestID(r.Context()),
		Outcome: "success", Status: status,
	}
	if e.Target == "" {
		e.Target = r.URL.Path
	}
	if herr != nil || status >= 400 {
		e.Outcome = "failure"
		e.Detail = rackplane.ErrorMessage(herr)
	}
	e.Before = short(n.before)
	e.After = short(n.after)
	// The request is answered; its context may be gone.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.auditLog.Audit(ctx, e); err != nil {
		s.log.Error("audit log write failed", "action", pattern, "actor", e.Actor, "request_id", e.RequestID, "err", err)
	}
}

// maxAuditJSON bounds before/after: the audit log says what changed, it
// does not keep copies of documents.
const maxAuditJSON = 4 << 10

func short(v any) json.RawMessage {
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	if len(b) > maxAuditJSON {
		b, _ = json.Marshal(map[string]any{"truncated": true, "bytes": len(b)})
	}
	return b
}

func (s *Server) tokenRoutes() {
	s.handle("POST /api/v1/tokens", s.createToken)
	s.handle("GET /api/v1/tokens", s.listTokens)
	s.handle("DELETE /api/v1/tokens/{id}", s.revokeToken)
	s.handle("GET /api/v1/audit", s.listAudit, "actor", "action", "target", "since", "until", "after", "limit", "last")
}

type createTokenRequest struct {
	Name  string `json:"name"`
	Actor string `json:"actor"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req createTokenRequest
	if err := DecodeJSON(r, &req, "name"); err != nil {
		return err
	}
	if req.Actor == "" {
		req.Actor = Actor(r.Context())
	}
	t, plain, err := s.tokens.CreateToken(r.Context(), req.Name, req.Actor, Actor(r.Context()), time.Now())
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.TokenStreamName(t.ID), nil, map[string]string{"name": t.Name, "actor": t.Actor})
	return writeJSON(w, http.StatusCreated, map[string]any{"token": plain, "id": t.ID, "name": t.Name, "actor": t.Actor,
		"note": "the token is shown this once; keep it"})
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.tokens.ListTokens(r.Context())
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []postgres.Token{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": ts})
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	t, err := s.tokens.RevokeToken(r.Context(), id, Actor(r.Context()), time.Now())
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.TokenStreamName(t.ID), map[string]any{"revoked": false}, map[string]any{"revoked": true})
	return writeJSON(w, http.StatusOK, t)
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := postgres.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target")}
	if f.Action != "" && !slices.Contains(s.actions, f.Action) {
		return rackplane.Errorf(rackplane.EINVALID, "action %.80q: no such action; an action is the route of a change: %s",
			f.Action, strings.Join(s.sortedActions(), ", "))
	}
	var err error
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return rackplane.Errorf(rackplane.EINVALID, "%s must be an RFC 3339 time, such as 2026-11-23T08:00:00Z", name)
			}
		}
	}
	after, err := QueryInt(r, "after", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	f.After = int64(after)
	if f.Limit, err = QueryInt(r, "limit", 100, 1, 1000); err != nil {
		return err
	}
	last, err := QueryInt(r, "last", 0, 1, 1000)
	if err != nil {
		return err
	}
	if last > 0 {
		if f.After != 0 {
			return rackplane.Errorf(rackplane.EINVALID, "last reads the newest entries; it does not go with after")
		}
		f.Limit, f.Last = last, true
	}
	entries, err := s.auditLog.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	if entries == nil {
		entries = []postgres.AuditEntry{}
	}
	next := f.After
	if len(entries) > 0 {
		next = entries[len(entries)-1].ID
	}
	return writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "next": next})
}

// Actor returns who makes an API request (set by authentication).
func Actor(ctx context.Context) string {
	if info := infoOf(ctx); info != nil {
		return info.actor
	}
	return ""
}

// sortedActions are the audit log's actions, by path then method.
func (s *Server) sortedActions() []string {
	out := slices.Clone(s.actions)
	slices.SortFunc(out, func(a, b string) int {
		am, ap, _ := strings.Cut(a, " ")
		bm, bp, _ := strings.Cut(b, " ")
		return cmp.Or(strings.Compare(ap, bp), strings.Compare(am, bm))
	})
	return out
}
