package eventbus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
)

// Follow reads the region's events of types from the region stream, in
// order, starting after stream sequence after() (0: from the beginning),
// and hands each one's raw bytes and sequence to handle, until ctx ends.
// When the consumer fails (NATS away, stream not created yet) it starts
// over, after a backoff, from where after() says handle got to: a
// follower that persists its sequence resumes exactly there across
// restarts too. An ordered consumer is ephemeral, which is all a rack's
// NATS permissions allow.
func Follow(ctx context.Context, js jetstream.JetStream, types []string, after func() uint64, handle func(raw []byte, seq uint64), log *slog.Logger) {
	retry := backoff.New(backoff.Policy{})
	for ctx.Err() == nil {
		err := followOnce(ctx, js, types, after(), handle)
		if ctx.Err() != nil {
			return
		}
		wait := retry.Next()
		log.Warn("following region events", "types", types, "err", err, "retry_in", wait)
		backoff.Sleep(ctx, wait)
	}
}

func followOnce(ctx context.Context, js jetstream.JetStream, types []string, seq uint64, handle func([]byte, uint64)) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	for _, t := range types {
		cfg.FilterSubjects = append(cfg.FilterSubjects, events.RegionEventSubject(t))
	}
	if seq > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = seq + 1
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cons, err := js.OrderedConsumer(cctx, events.RegionStream, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			return fmt.Errorf("next message: %w", err)
		}
		var mseq uint64
		if md, err := m.Metadata(); err == nil {
			mseq = md.Sequence.Stream
		}
		handle(m.Data(), mseq)
	}
}
