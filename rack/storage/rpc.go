package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// MethodProviders is the rpc method listing the rack's providers.
const MethodProviders = events.MethodStorageProviders

// Method returns the rpc method of an action: "storage.<action>".
func Method(a Action) string { return events.StorageMethod(a) }

// maxRequest bounds an rpc request body.
const maxRequest = 256 << 10

// RegisterRPC answers storage.<action> for each of Actions, and
// storage.providers, on rack rackID's rpc subjects. Only those subjects
// are subscribed: a message on any other storage.* subject finds no
// responder, and the action is taken from the subject, never from the
// message body. Every request is checked against its schema first.
func (m *Manager) RegisterRPC(srv *rpc.Server, rackID string) error {
	if rackID != m.cfg.RackID {
		return rackplane.Errorf(rackplane.EINVALID, "storage rpc registered for rack %q, but the manager is rack %q's", rackID, m.cfg.RackID)
	}
	set, err := schema.Default()
	if err != nil {
		return err
	}
	for _, a := range Actions {
		if err := srv.Handle(events.RackRPCSubject(rackID, Method(a)), "", checked(set, Method(a), m.actionHandler(a))); err != nil {
			return err
		}
	}
	return srv.Handle(events.RackRPCSubject(rackID, MethodProviders), "", checked(set, MethodProviders, func(context.Context, []byte) (any, error) {
		ps := m.Providers()
		if ps == nil {
			ps = []Provider{} // the schema wants a list, even an empty one
		}
		return ps, nil
	}))
}

// checked refuses a request that breaks its method's schema before h sees
// it, so a caller in any language gets the schema's own words for what is
// wrong. An empty body or null is {} (storage.providers takes no options).
func checked(set *schema.Set, method string, h rpc.HandlerFunc) rpc.HandlerFunc {
	name := events.StorageRPCSchema(method, events.PartRequest)
	return func(ctx context.Context, data []byte) (any, error) {
		if len(data) > maxRequest {
			return nil, rackplane.Errorf(rackplane.EINVALID, "request is %d bytes, limit %d", len(data), maxRequest)
		}
		if t := bytes.TrimSpace(data); len(t) == 0 || string(t) == "null" {
			data = []byte("{}")
		}
		if err := set.ValidateJSON(name, data); err != nil {
			return nil, rackplane.WrapError(rackplane.EINVALID, err, "storage request breaks %s: %s", name,
				truncate(strings.ReplaceAll(err.Error(), "\n", "; "), 1024))
		}
		return h(ctx, data)
	}
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
// The size was checked before the schema.
func decodeRequest(data []byte) (Request, error) {
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
