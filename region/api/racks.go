package api

import (
	"context"
	"net/http"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/natsauth"
)

// RackRetirer retires racks: the region, which checks the rack's
// heartbeats, revokes its credential and deletes its consumers around the
// database's own checks.
type RackRetirer interface {
	RetireRack(ctx context.Context, rackID, by, reason string) (RackRetirement, error)
}

// RackRetirement is what retiring a rack did, as DELETE /api/v1/racks/{id}
// answers it.
type RackRetirement struct {
	natsauth.Retirement
	// ConsumersDeleted is how many consumers of the region stream the
	// rack followed it through were deleted.
	ConsumersDeleted int `json:"consumers_deleted"`
}

// retireRack retires a rack: 200 with what was done (also when it was
// retired already, which changes nothing), 409 with the reason while it
// is online or in use. ?reason= says why, for the log.
func (s *Server) retireRack(w http.ResponseWriter, r *http.Request) error {
	id, err := PathUUID(r, "id")
	if err != nil {
		return err
	}
	// The audit names the rack whatever the outcome.
	AuditNote(r.Context(), events.RackStreamName(id), nil, nil)
	if s.rackRetirer == nil {
		return rackplane.Errorf(rackplane.EUNAVAILABLE, "this region cannot retire racks")
	}
	rt, err := s.rackRetirer.RetireRack(r.Context(), id, Actor(r.Context()), r.URL.Query().Get("reason"))
	if err != nil {
		return err
	}
	if !rt.AlreadyRetired {
		AuditNote(r.Context(), events.RackStreamName(id), map[string]any{"name": rt.Name, "retired": false},
			map[string]any{"retired": true, "credential_revoked": rt.Credential != nil, "disconnected": rt.Disconnected,
				"consumers_deleted": rt.ConsumersDeleted})
	}
	return writeJSON(w, http.StatusOK, rt)
}
