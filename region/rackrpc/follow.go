package rackrpc

import (
	"context"
	"encoding/json"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
)

// follow (re)creates the asking rack's consumer for a purpose, delivering
// from just after the sequence the rack has applied. Racks may not create
// consumers themselves: a rack that could would choose its own filter (and
// read every rack's decisions) or create consumers until the stream has no
// room for anyone else's.
func (s *Server) follow(ctx context.Context, rack string, data []byte) (any, error) {
	if s.js == nil {
		return nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "follow: this region has no JetStream")
	}
	var req events.FollowRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "follow: %v", err)
	}
	if events.FollowTypes(req.Purpose) == nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "follow: unknown purpose %q", req.Purpose)
	}
	name, err := eventbus.StartRackConsumer(ctx, s.js, rack, req.Purpose, req.After)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EUNAVAILABLE, err, "follow")
	}
	return events.FollowReply{Consumer: name}, nil
}
