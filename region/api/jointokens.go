package api

import (
	"context"
	"net/http"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/postgres"
)

// JoinTokens keeps the tokens new racks join NATS with, and racks'
// bindings to their nkeys.
type JoinTokens interface {
	CreateJoinToken(ctx context.Context, ttl time.Duration, createdBy string, now time.Time) (postgres.JoinToken, string, error)
	ListJoinTokens(ctx context.Context) ([]postgres.JoinToken, error)
	RevokeJoinToken(ctx context.Context, id, by string, now time.Time) (postgres.JoinToken, error)
	GetRackCredential(ctx context.Context, rackID string) (postgres.RackCredential, error)
}

// RackRevoker revokes a rack's NATS credential and disconnects it
// (natsauth.Service; natsauth.RecordOnly without the callout).
type RackRevoker interface {
	RevokeRack(ctx context.Context, rackID, by string) (natsauth.Revocation, error)
}

// defaultJoinTokenTTL is a join token's life when the request does not
// say: long enough to bring racks up today, short enough not to linger.
const defaultJoinTokenTTL = 24 * time.Hour

func (s *Server) joinTokenRoutes() {
	s.handle("POST /api/v1/join-tokens", s.createJoinToken)
	s.handle("GET /api/v1/join-tokens", s.listJoinTokens)
	s.handle("DELETE /api/v1/join-tokens/{id}", s.revokeJoinToken)
	s.handle("GET /api/v1/racks/{id}/credential", s.getRackCredential)
	s.handle("DELETE /api/v1/racks/{id}/credential", s.revokeRack)
}

type createJoinTokenRequest struct {
	// TTL is a Go duration, such as "24h" or "30m".
	TTL string `json:"ttl"`
}

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request) error {
	var req createJoinTokenRequest
	if r.ContentLength != 0 {
		if err := DecodeJSON(r, &req); err != nil {
			return err
		}
	}
	ttl := defaultJoinTokenTTL
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil {
			return rackplane.Errorf(rackplane.EINVALID, "ttl %q: want a duration such as 24h or 30m", req.TTL)
		}
	}
	t, plain, err := s.joinTokens.CreateJoinToken(r.Context(), ttl, Actor(r.Context()), time.Now())
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.JoinTokenStreamName(t.ID), nil, map[string]any{"expires_at": t.ExpiresAt})
	return writeJSON(w, http.StatusCreated, map[string]any{"token": plain, "id": t.ID, "expires_at": t.ExpiresAt,
		"note": "the join token is shown this once; racks join with it (rackd -join-token-file) until it expires or is revoked"})
}

func (s *Server) listJoinTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.joinTokens.ListJoinTokens(r.Context())
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []postgres.JoinToken{}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"join_tokens": ts})
}

func (s *Server) revokeJoinToken(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	t, err := s.joinTokens.RevokeJoinToken(r.Context(), id, Actor(r.Context()), time.Now())
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.JoinTokenStreamName(t.ID), map[string]any{"revoked": false}, map[string]any{"revoked": true})
	return writeJSON(w, http.StatusOK, t)
}

func (s *Server) getRackCredential(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	c, err := s.joinTokens.GetRackCredential(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, c)
}

func (s *Server) revokeRack(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	if s.rackRevoker == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "this region cannot revoke racks")
	}
	rv, err := s.rackRevoker.RevokeRack(r.Context(), id, Actor(r.Context()))
	if err != nil {
		return err
	}
	AuditNote(r.Context(), events.RackStreamName(id), map[string]any{"revoked": false},
		map[string]any{"revoked": true, "nkey": rv.NKey, "disconnected": rv.Disconnected})
	return writeJSON(w, http.StatusOK, rv)
}
