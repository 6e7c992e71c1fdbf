package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
)

// MethodProviders is the rpc method listing the rack's providers.
const MethodProviders = "storage.providers"

// Method returns the rpc method of an action: "storage.<action>".
func Method(a Action) string { return "storage." + string(a) }

// maxRequest bounds an rpc request body.
const maxRequest = 256 << 10

// RegisterRPC answers storage.<action> for each of Actions, and
// storage.providers, on rack rackID's rpc subjects. Only those subjects
// are subscribed: a message on any other storage.* subject finds no
// responder, and the action is taken from the subject, never from the
// message body.
func (m *Manager) RegisterRPC(srv *rpc.Server, rackID string) error {
	if rackID != m.cfg.RackID {
		return rackplane.Errorf(rackplane.EINVALID, "storage rpc registered for rack %q, but the manager is rack %q's", rackID, m.cfg.RackID)
	}
	for _, a := range Actions {
		if err := srv.Handle(events.RackRPCSubject(rackID, Method(a)), "", m.actionHandler(a)); err != nil {
			return err
		}
	}
	return srv.Handle(events.RackRPCSubject(rackID, MethodProviders), "", func(context.Context, []byte) (any, error) {
		return m.Providers(), nil
	})
}

func (m *Manager) actionHandler(a Action) rpc.HandlerFunc {
	return func(ctx context.Context, data []byte) (any, error) {
		req, err := decodeRequest(data)
		if err != nil {
			return nil, err
		}
		return m.Do(ctx, string(a), req)
	}
}

// decodeRequest decodes a request strictly: unknown fields (an "action" or
// "script" smuggled into the body, say) are refused, not ignored.
func decodeRequest(data []byte) (Request, error) {
	if len(data) > maxRequest {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "request is %d bytes, limit %d", len(data), maxRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return Request{}, rackplane.WrapError(rackplane.EINVALID, err, "malformed storage request: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return Request{}, rackplane.Errorf(rackplane.EINVALID, "malformed storage request: data after the JSON object")
	}
	return req, nil
}
