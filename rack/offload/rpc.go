package offload

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/schema"
)

// RPCMethod is the rack rpc method of the hand-off:
// events.RackRPCSubject(rackID, RPCMethod).
const RPCMethod = events.MethodHandoff

// Schemas of the handoff rpc documents (files under schema/).
const (
	RPCRequestSchema = "rpc.rack.handoff.request"
	RPCReplySchema   = "rpc.rack.handoff.reply"
)

// RPCRequest asks the rack what a front-end should serve.
type RPCRequest struct {
	Local    string `json:"local,omitempty"`
	Remote   string `json:"remote,omitempty"`
	FileName string `json:"file_name"`
}

// HandleRPC answers hand-off requests on the rack's rpc subject. The reply
// result is an Answer; a refusal is an rpc error with code ENOTFOUND or
// EFORBIDDEN and a message fit for a TFTP error packet.
//
// The front-end reports each transfer by publishing a boot_transfer event
// naming the answer's handoff_id on the rack's event subject; Completions
// picks those up and deletes the ephemeral file.
func (o *Offload) HandleRPC(srv *rpc.Server, rackID string) error {
	set, err := schema.Default()
	if err != nil {
		return err
	}
	return srv.Handle(events.RackRPCSubject(rackID, RPCMethod), "", func(ctx context.Context, data []byte) (any, error) {
		if err := set.ValidateJSON(RPCRequestSchema, data); err != nil {
			return nil, rackplane.WrapError(rackplane.EINVALID, err, "malformed hand-off request: %v", err)
		}
		var req RPCRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, rackplane.WrapError(rackplane.EINVALID, err, "malformed hand-off request")
		}
		return o.Handoff(ctx, handoff.Request{Protocol: events.BootProtocolOffloadRPC, Local: req.Local, Remote: req.Remote, Name: req.FileName})
	})
}

// Completions follows boot_transfer events on the rack's event subject
// until ctx ends, and releases the ephemeral file of each one that names
// a hand-off of the store.
func (o *Offload) Completions(ctx context.Context, nc *nats.Conn, rackID string) error {
	validator, err := events.NewValidator()
	if err != nil {
		return err
	}
	sub, err := nc.Subscribe(events.RackEventSubject(rackID, events.TypeBootTransfer), func(m *nats.Msg) {
		e, err := validator.Decode(m.Data)
		if err != nil || e.Type != events.TypeBootTransfer || events.RackIDFromSource(e.Source) != rackID {
			return
		}
		var t events.BootTransfer
		if e.DecodeData(&t) != nil || t.HandoffID == "" {
			return
		}
		o.store.Done(t.HandoffID)
	})
	if err != nil {
		return fmt.Errorf("offload: subscribe to transfer reports: %w", err)
	}
	<-ctx.Done()
	sub.Unsubscribe()
	return nil
}
