package offload

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

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
		a, err := o.Handoff(ctx, handoff.Request{Protocol: events.BootProtocolOffloadRPC, Local: req.Local, Remote: req.Remote, Name: req.FileName})
		if err == nil && a.Ephemeral {
			// Before the answer: the front-end may report at once.
			o.awaitReport(ctx)
		}
		return a, err
	})
}

// reportsReady bounds how long an answer waits for Completions to start
// (it starts with the rack, beside the rpc handler).
const reportsReady = time.Second

// reportsIdle is how often Completions looks whether any report is still
// awaited, and stops listening when none is.
var reportsIdle = 5 * time.Second

// reports follows the boot_transfer events of the rack's subject while an
// ephemeral file handed out over NATS waits for its front-end's report,
// and only then: the rack's own boot transfers (HTTP, TFTP) go out on
// that subject too, and a rack serving thousands of requests a second
// must not get each back.
type reports struct {
	nc        *nats.Conn
	subject   string
	rackID    string
	validator *events.Validator
	log       *slog.Logger

	mu      sync.Mutex
	sub     *nats.Subscription
	stopped bool
}

// Completions follows the front-ends' transfer reports until ctx ends,
// and releases the ephemeral file of each one that names a hand-off of
// the store. It subscribes to them only while a file handed out over the
// handoff rpc waits for its report.
func (o *Offload) Completions(ctx context.Context, nc *nats.Conn, rackID string) error {
	validator, err := events.NewValidator()
	if err != nil {
		return err
	}
	rep := &reports{nc: nc, subject: events.RackEventSubject(rackID, events.TypeBootTransfer), rackID: rackID, validator: validator, log: o.log}
	o.readyOnce.Do(func() {
		o.reports = rep
		close(o.ready)
	})
	if o.reports != rep {
		return rackplane.Errorf(rackplane.EINVALID, "offload: Completions is running already")
	}
	t := time.NewTicker(reportsIdle)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			rep.mu.Lock()
			rep.stopped = true
			if rep.sub != nil {
				_ = rep.sub.Unsubscribe()
				rep.sub = nil
			}
			rep.mu.Unlock()
			return nil
		case <-t.C:
			// A file put after this count is followed by its
			// awaitReport, which takes the lock after this does.
			rep.mu.Lock()
			if rep.sub != nil && o.store.awaitedReports() == 0 {
				_ = rep.sub.Unsubscribe()
				rep.sub = nil
			}
			rep.mu.Unlock()
		}
	}
}

// awaitReport makes sure the report of a file just put in the store will
// be received: it subscribes, unless subscribed already, and waits until
// the server has the subscription. Without Completions running, the file
// goes when its time to live runs out.
func (o *Offload) awaitReport(ctx context.Context) {
	select {
	case <-o.ready:
	case <-ctx.Done():
		return
	case <-time.After(reportsReady):
		return
	}
	rep := o.reports
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if rep.sub != nil || rep.stopped {
		return
	}
	sub, err := rep.nc.Subscribe(rep.subject, func(m *nats.Msg) { o.report(rep, m) })
	if err == nil {
		err = rep.nc.FlushWithContext(ctx)
	}
	if err != nil {
		rep.log.Warn("offload: transfer reports not followed: ephemeral files go when their time to live runs out", "err", err)
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		return
	}
	rep.sub = sub
}

// report releases the ephemeral file a boot_transfer event names. An
// event naming no file awaiting a report (one of the rack's own HTTP or
// TFTP transfers) is dropped before it is decoded.
func (o *Offload) report(rep *reports, m *nats.Msg) {
	var peek struct {
		Data struct {
			HandoffID string `json:"handoff_id"`
		} `json:"data"`
	}
	if json.Unmarshal(m.Data, &peek) != nil || peek.Data.HandoffID == "" || !o.store.awaitsReport(peek.Data.HandoffID) {
		return
	}
	e, err := rep.validator.Decode(m.Data)
	if err != nil || e.Type != events.TypeBootTransfer || events.RackIDFromSource(e.Source) != rep.rackID {
		return
	}
	var t events.BootTransfer
	if e.DecodeData(&t) != nil || t.HandoffID == "" {
		return
	}
	o.store.Done(t.HandoffID)
}
