// Package rackcall asks one rack over its rpc subjects the way the region
// asks any outside party: the request is checked against its schema before
// it leaves, the reply after it arrives, and the ways a rack can fail to
// answer become errors an operator can act on.
package rackcall

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/schema"
)

// Call is one rpc to one rack.
type Call struct {
	Rack   rackplane.Rack
	Method string
	// RequestSchema and ReplySchema name the schema files of the method's
	// request and reply.
	RequestSchema, ReplySchema string
	Timeout                    time.Duration
	// What is asked, in the operator's words, for the errors: "its image
	// store", "the volume".
	What string
	// TimedOut is the error message when no answer came in time; empty:
	// a generic one.
	TimedOut string
}

// Do sends req and decodes the reply's result into out. No responder is
// EUNAVAILABLE, no answer in time ETIMEOUT, a reply that breaks its schema
// EUNAVAILABLE (logged); the rack's own errors pass through as it sent
// them.
func Do(ctx context.Context, nc *nats.Conn, log *slog.Logger, c Call, req, out any) error {
	body, err := Encode(c.Method, c.RequestSchema, req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var raw json.RawMessage
	err = rpc.Call(ctx, nc, events.RackRPCSubject(c.Rack.ID, c.Method), json.RawMessage(body), &raw)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if !c.Rack.Online {
			return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) is offline since %s: %s cannot be reached until it is back",
				c.Rack.ID, c.Rack.Name, c.Rack.StatusChangedAt.UTC().Format(time.RFC3339), c.What)
		}
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s (%s) does not answer: it is not connected to NATS (it may have just stopped)", c.Rack.ID, c.Rack.Name)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if c.TimedOut != "" {
			return rackplane.WrapError(rackplane.ETIMEOUT, err, "%s", c.TimedOut)
		}
		return rackplane.WrapError(rackplane.ETIMEOUT, err, "rack %s (%s) did not answer %s within %s; it may be busy: retry, or give a longer ?timeout=",
			c.Rack.ID, c.Rack.Name, c.Method, c.Timeout)
	case err != nil:
		return err
	}
	set, err := schema.Default()
	if err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "load schemas")
	}
	if err := set.ValidateJSON(c.ReplySchema, raw); err != nil {
		log.Warn("rack answered with an invalid reply", "rack_id", c.Rack.ID, "method", c.Method, "err", err)
		return rackplane.WrapError(rackplane.EUNAVAILABLE, err, "rack %s answered %s with a reply that breaks its schema; is it running a compatible version?", c.Rack.ID, c.Method)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return rackplane.WrapError(rackplane.EINTERNAL, err, "decode rack %s's %s reply", c.Rack.ID, c.Method)
	}
	return nil
}

// Encode is req as the rack receives it, checked against schemaName:
// EINVALID, with the problem on one line, when it breaks it.
func Encode(method, schemaName string, req any) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EINTERNAL, err, "encode %s request", method)
	}
	set, err := schema.Default()
	if err != nil {
		return nil, rackplane.WrapError(rackplane.EINTERNAL, err, "load schemas")
	}
	if err := set.ValidateJSON(schemaName, body); err != nil {
		return nil, rackplane.Errorf(rackplane.EINVALID, "invalid %s request: %s", method, Clip(strings.ReplaceAll(err.Error(), "\n", "; ")))
	}
	return body, nil
}

// Clip keeps a message short enough for a response or a log line.
func Clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
