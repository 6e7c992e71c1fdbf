package eventbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/rpc"
)

// FollowConfig says which region events a rack follows.
type FollowConfig struct {
	// NATS carries the follow rpc; JetStream reads the consumer.
	NATS      *nats.Conn
	JetStream jetstream.JetStream
	// RackID is the rack following; Purpose what it follows
	// (events.FollowBoot, events.FollowSubnets).
	RackID, Purpose string
	// After returns the stream sequence the rack has applied (0: none).
	After func() uint64
	// Handle applies one event's raw bytes at its stream sequence.
	Handle func(raw []byte, seq uint64)
	Log    *slog.Logger
}

// Follow reads rack RackID's region events of Purpose, in order, from the
// consumer the region keeps for it, until ctx ends. Each time it starts
// (and after any failure: NATS away, a missed heartbeat, a gap) it asks
// the region to start that consumer just after After(), so a follower
// that persists its sequence resumes exactly there across restarts too.
//
// Racks may not create consumers, only read their own; the region creates
// and positions them (events.MethodFollow). While the region is away the
// consumer is read as it stands, but only when it has delivered nothing
// past After(): what it delivered to a reader that stopped before applying
// it would otherwise be skipped. Then Follow waits for the region.
func Follow(ctx context.Context, cfg FollowConfig) {
	retry := backoff.New(backoff.Policy{})
	for ctx.Err() == nil {
		err := followOnce(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		wait := retry.Next()
		cfg.Log.Warn("following region events", "purpose", cfg.Purpose, "err", err, "retry_in", wait)
		backoff.Sleep(ctx, wait)
	}
}

func followOnce(ctx context.Context, cfg FollowConfig) error {
	after := cfg.After()
	name := events.RackConsumerName(cfg.RackID, cfg.Purpose)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	var reply events.FollowReply
	perr := rpc.Call(pctx, cfg.NATS, events.RegionRPCSubject(cfg.RackID, events.MethodFollow),
		events.FollowRequest{Purpose: cfg.Purpose, After: after}, &reply)
	cancel()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cons, err := cfg.JetStream.Consumer(cctx, events.RegionStream, name)
	cancel()
	if err != nil {
		if perr != nil {
			return fmt.Errorf("the region did not start consumer %s (%v), and it cannot be read (%w)", name, perr, err)
		}
		return fmt.Errorf("consumer %s: %w", name, err)
	}
	info := cons.CachedInfo()
	if perr != nil && info.Delivered.Stream > after {
		return fmt.Errorf("the region did not start consumer %s after sequence %d (%v), and it has delivered up to %d: waiting for the region", name, after, perr, info.Delivered.Stream)
	}
	last := info.Delivered.Consumer
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume %s: %w", name, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			return fmt.Errorf("next message of %s: %w", name, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("message of %s without metadata: %w", name, err)
		}
		if md.Sequence.Consumer != last+1 {
			// Unacknowledged delivery: a message lost between the
			// server and here is not sent again. Start over from what
			// was applied.
			return fmt.Errorf("consumer %s skipped from delivery %d to %d", name, last, md.Sequence.Consumer)
		}
		last = md.Sequence.Consumer
		cfg.Handle(m.Data(), md.Sequence.Stream)
	}
}

// rackConsumerIdle is how long a rack's consumer outlives its last reader:
// a rack that stays away longer asks for it again (events.MethodFollow)
// when it returns, and one that is gone for good leaves nothing behind.
const rackConsumerIdle = 72 * time.Hour

// StartRackConsumer (re)creates rack rackID's consumer for purpose on the
// region stream, delivering its events from just after stream sequence
// after, and returns its name: the region's side of events.MethodFollow.
// The consumer reads only the rack's own subjects and is not
// acknowledged; Follow detects what it loses and asks again.
func StartRackConsumer(ctx context.Context, js jetstream.JetStream, rackID, purpose string, after uint64) (string, error) {
	types := events.FollowTypes(purpose)
	if types == nil {
		return "", fmt.Errorf("unknown purpose %q", purpose)
	}
	name := events.RackConsumerName(rackID, purpose)
	cfg := jetstream.ConsumerConfig{
		Name:              name,
		Durable:           name,
		Description:       "rack " + rackID + " follows its " + purpose + " events",
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: rackConsumerIdle,
	}
	for _, t := range types {
		cfg.FilterSubjects = append(cfg.FilterSubjects, events.RegionRackEventSubject(rackID, t))
	}
	if after > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = after + 1
	}
	// A consumer's start cannot be moved: delete it and create it anew.
	if err := js.DeleteConsumer(ctx, events.RegionStream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return "", fmt.Errorf("replace consumer %s: %w", name, err)
	}
	if _, err := js.CreateConsumer(ctx, events.RegionStream, cfg); err != nil {
		return "", fmt.Errorf("create consumer %s: %w", name, err)
	}
	return name, nil
}

// ServeFollow answers events.MethodFollow for every rack on srv with
// StartRackConsumer, taking the rack from the subject as the region does.
// It is the region's answer without the region: for tests of a rack and
// for tools that run racks on their own.
func ServeFollow(srv *rpc.Server, js jetstream.JetStream) error {
	return srv.Handle(events.RegionRPCWildcard(events.MethodFollow), events.RegionQueue, func(ctx context.Context, data []byte) (any, error) {
		var req events.FollowRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, err
		}
		name, err := StartRackConsumer(ctx, js, events.RackIDFromRegionRPCSubject(rpc.Subject(ctx)), req.Purpose, req.After)
		return events.FollowReply{Consumer: name}, err
	})
}

// DeleteRackConsumers deletes the consumers rack rackID follows the region
// stream through (one per events.FollowPurposes) and returns how many it
// deleted: for a retired rack, which will not read them again. One that
// is not there (never made, or gone after rackConsumerIdle) is no error.
func DeleteRackConsumers(ctx context.Context, js jetstream.JetStream, rackID string) (int, error) {
	n := 0
	var errs []error
	for _, purpose := range events.FollowPurposes {
		name := events.RackConsumerName(rackID, purpose)
		err := js.DeleteConsumer(ctx, events.RegionStream, name)
		switch {
		case err == nil:
			n++
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			errs = append(errs, fmt.Errorf("delete consumer %s: %w", name, err))
		}
	}
	return n, errors.Join(errs...)
}
