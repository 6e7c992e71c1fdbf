package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/region/postgres"
)

// ConsumerName is the durable consumer all region instances share, so each
// rack event is delivered to one of them.
const ConsumerName = "rackplane-region-ingest"

// Config configures an Ingester.
type Config struct {
	Batch int // messages per transaction at most
	// MaxWait is how long a batch stays open after its first message for
	// more to join it: the most ingest adds to an event's latency to let
	// batches form. A batch closes at Batch messages or MaxWait, whichever
	// comes first, however steadily messages trickle in.
	MaxWait time.Duration
	AckWait time.Duration // redelivery after this long without an ack
	// Streams, when set, makes the event streams again (or checks they
	// are there) before the consumer is made again after a failure: a
	// stream deleted from outside comes back rather than leaving the
	// region waiting for it.
	Streams    func(context.Context) error
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Store is what the ingester needs of the event store.
type Store interface {
	InTx(ctx context.Context, fn func(tx pgx.Tx) error) error
	AppendAny(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]postgres.Appended, error)
	RecordRejected(ctx context.Context, r postgres.Rejected) error
}

// Ingester consumes rack events.
type Ingester struct {
	js        jetstream.JetStream
	store     Store
	validator *events.Validator
	cfg       Config
	log       *slog.Logger

	ingested   prometheus.Counter
	duplicates prometheus.Counter
	rejected   *prometheus.CounterVec
	batchTime  prometheus.Histogram
	batchSize  prometheus.Histogram
	restarts   prometheus.Counter
	failures   prometheus.Counter
}

// New returns an ingester.
func New(js jetstream.JetStream, store Store, v *events.Validator, cfg Config) *Ingester {
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = 5 * time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 5 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	in := &Ingester{
		js: js, store: store, validator: v, cfg: cfg, log: cfg.Logger,
		ingested: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_events_ingested_total", Help: "Rack events appended to the log.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_events_duplicate_total", Help: "Rack events delivered again and already in the log.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_events_rejected_total", Help: "Messages on rack subjects refused, by reason.",
		}, []string{"reason"}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rackplane_region_ingest_batch_seconds", Help: "Time from the first message of a batch to its acknowledgement: waiting for more, validating, appending.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rackplane_region_ingest_batch_messages", Help: "Messages per ingest batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_ingest_batch_failures_total",
			Help: "Times a batch was not stored (Postgres away, or refused the transaction) and was tried again.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_ingest_consumer_restarts_total",
			Help: "Times the rack event consumer failed (deleted or reset from outside, NATS lost it) and was made again.",
		}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(in.ingested, in.duplicates, in.rejected, in.batchTime, in.batchSize, in.restarts, in.failures)
	}
	return in
}

// Run consumes until ctx ends. It retries while NATS or Postgres is away,
// and makes its consumer again when it fails (deleted or reset from
// outside, its stream recreated): whoever touches the consumer, the region
// keeps ingesting. A consumer made again delivers the stream from its
// start; what was ingested already is recognised by event id and counted
// as a duplicate, so the log still has each event once.
func (in *Ingester) Run(ctx context.Context) error {
	retry := backoff.New(backoff.Policy{Max: 5 * time.Second})
	for ctx.Err() == nil {
		err := in.consume(ctx)
		if ctx.Err() != nil || err == nil {
			return nil
		}
		in.restarts.Inc()
		wait := retry.Next()
		in.log.Error("rack event consumer failed; making it again", "err", err, "retry_in", wait)
		backoff.Sleep(ctx, wait)
		if in.cfg.Streams != nil {
			if err := in.cfg.Streams(ctx); err != nil && ctx.Err() == nil {
				in.log.Error("event streams not made again", "err", err)
			}
		}
	}
	return nil
}

// consume reads the rack event stream through the region's consumer until
// ctx ends (nil) or the consumer fails.
func (in *Ingester) consume(ctx context.Context) error {
	var cons jetstream.Consumer
	err := backoff.Retry(ctx, backoff.Policy{Max: time.Second}, func(ctx context.Context) (err error) {
		cons, err = in.js.CreateOrUpdateConsumer(ctx, events.RackStream, jetstream.ConsumerConfig{
			Durable:       ConsumerName,
			Description:   "region: rack events into the event store",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       in.cfg.AckWait,
			MaxAckPending: in.cfg.Batch * 20,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		return err
	}, func(err error, wait time.Duration) {
		in.log.Warn("rack event consumer not ready, retrying", "err", err, "retry_in", wait)
	})
	if err != nil {
		return nil // ctx ended
	}
	// The iterator keeps up to four batches fetched ahead, so the next
	// batch is on its way while this one commits.
	it, err := cons.Messages(jetstream.PullMaxMessages(in.cfg.Batch * 4))
	if err != nil {
		return fmt.Errorf("consume rack events: %w", err)
	}
	defer it.Stop()
	return in.pipeline(ctx, it)
}

// pipeline runs two stages: a reader forms batches, decoding and
// validating each message as it arrives, and the caller's goroutine
// stores the batches one after the other, in the order they were read.
// The hand-off between them is unbuffered: while a batch commits, the
// next one is filled and decoded, and it is handed over when the store is
// free, so that under load batches grow towards Batch (each commit's
// fixed cost shared by more events) and under a trickle each closes
// MaxWait after its first message. Since one goroutine stores every
// batch, in order, each rack's events go in in the order the rack
// published them. pipeline returns nil when ctx ends, an error when the
// consumer fails.
func (in *Ingester) pipeline(ctx context.Context, it jetstream.MessagesContext) error {
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	decoded := make(chan *batch)
	var readErr error
	go func() {
		defer close(decoded)
		for rctx.Err() == nil {
			b, err := in.next(rctx, it, decoded)
			if err != nil {
				if rctx.Err() == nil {
					readErr = err
				}
				return
			}
			if b == nil {
				return
			}
		}
	}()
	for b := range decoded {
		if !in.store1(ctx, b) {
			break
		}
	}
	stop()
	for range decoded { // let the reader see the end, then read readErr
	}
	if readErr != nil && ctx.Err() == nil {
		return fmt.Errorf("consume rack events: %w", readErr)
	}
	return nil
}

// store1 stores b, trying again while that fails: a batch is never
// skipped, so that a later one cannot overtake it and reorder a rack's
// events. While it waits, its messages are kept from redelivery; those
// fetched behind it may be redelivered meanwhile, and the copy that comes
// second is recognised by its event id. False when ctx ended first.
func (in *Ingester) store1(ctx context.Context, b *batch) bool {
	retry := backoff.New(backoff.Policy{Max: 5 * time.Second})
	for {
		err := in.handle(ctx, b)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		in.failures.Inc()
		wait := retry.Next()
		in.log.Error("ingest batch failed, will retry", "err", err, "messages", len(b.msgs), "retry_in", wait)
		b.inProgress()
		if !backoff.Sleep(ctx, wait) {
			return false
		}
	}
}

// next forms one batch and hands it to out. It waits for a first
// message, then for more until the batch is full or MaxWait has passed
// since the first (a batch closes on time however steadily messages keep
// coming), and then, for as long as out is not ready to take it (the
// store is busy with the batch before), goes on adding what arrives, up
// to Batch. It returns a nil batch when ctx ends.
func (in *Ingester) next(ctx context.Context, it jetstream.MessagesContext, out chan<- *batch) (*batch, error) {
	var b *batch
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err == nil {
			b = in.newBatch()
			in.add(b, m)
			break
		}
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil, err
		}
		// Missed heartbeats and the like: the iterator recovers by itself.
		in.log.Warn("waiting for rack events", "err", err)
	}
	deadline := time.Now().Add(in.cfg.MaxWait)
	for len(b.msgs) < in.cfg.Batch {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		m, err := it.Next(jetstream.NextMaxWait(left))
		if err != nil {
			break
		}
		in.add(b, m)
	}
	for len(b.msgs) < in.cfg.Batch {
		select {
		case out <- b:
			return b, nil
		default:
		}
		m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
		if err == nil {
			in.add(b, m)
			continue
		}
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			break // nothing more will come: wait for the store
		}
	}
	select {
	case out <- b:
		return b, nil
	case <-ctx.Done():
		return nil, nil
	}
}

// batch is a batch of messages, decoded and validated.
type batch struct {
	start    time.Time
	msgs     []jetstream.Msg
	good     []accepted
	bad      []refused
	recorded int // refusals recorded so far, should storing be tried again
}

type refused struct {
	msg jetstream.Msg
	ev  events.Event
	err error
}

// inProgress tells JetStream the batch's messages are still being worked
// on, so that AckWait does not run out while Postgres is away.
func (b *batch) inProgress() {
	for _, m := range b.msgs {
		_ = m.InProgress()
	}
}

func (in *Ingester) newBatch() *batch {
	return &batch{start: time.Now(), msgs: make([]jetstream.Msg, 0, 64), good: make([]accepted, 0, 64)}
}

// add decodes and validates m into b: what rejecting or storing it needs,
// computed while the batch before is being stored.
func (in *Ingester) add(b *batch, m jetstream.Msg) {
	b.msgs = append(b.msgs, m)
	ev, err := in.check(m)
	if err != nil {
		b.bad = append(b.bad, refused{m, ev, err})
		return
	}
	b.good = append(b.good, accepted{m, ev})
}

type accepted struct {
	msg jetstream.Msg
	ev  events.Event
}

// handle records the refusals of b, appends its good events in one
// transaction and acknowledges them after the commit.
func (in *Ingester) handle(ctx context.Context, b *batch) error {
	for ; b.recorded < len(b.bad); b.recorded++ {
		r := b.bad[b.recorded]
		if err := in.reject(ctx, r.msg, r.ev, r.err); err != nil {
			return err
		}
	}
	good := b.good
	if len(good) == 0 {
		return nil
	}
	evs := make([]events.Event, len(good))
	for i, a := range good {
		evs[i] = a.ev
	}
	var appended []postgres.Appended
	err := in.store.InTx(ctx, func(tx pgx.Tx) (err error) {
		appended, err = in.store.AppendAny(ctx, tx, evs)
		return err
	})
	if err != nil && isDataError(err) && len(good) > 1 {
		// One event's state change was refused (a projection error): find
		// it by appending one at a time, so the others still go in.
		return in.oneByOne(ctx, b)
	}
	if err != nil && isDataError(err) {
		b.good = nil
		return in.reject(ctx, good[0].msg, good[0].ev, &events.RejectError{Reason: events.ReasonProjection, Err: err})
	}
	if err != nil {
		return err
	}
	b.good = nil
	in.count(appended)
	for _, a := range good {
		_ = a.msg.Ack()
	}
	in.batchSize.Observe(float64(len(b.msgs)))
	in.batchTime.Observe(time.Since(b.start).Seconds())
	return nil
}

// oneByOne stores b's good events one transaction each; those stored are
// taken off b, so that a retry goes on from the first one not stored.
func (in *Ingester) oneByOne(ctx context.Context, b *batch) error {
	for len(b.good) > 0 {
		if err := in.handleAccepted(ctx, b.good[0]); err != nil {
			return err
		}
		b.good = b.good[1:]
	}
	return nil
}

func (in *Ingester) handleAccepted(ctx context.Context, a accepted) error {
	var appended []postgres.Appended
	err := in.store.InTx(ctx, func(tx pgx.Tx) (err error) {
		appended, err = in.store.AppendAny(ctx, tx, []events.Event{a.ev})
		return err
	})
	if err != nil && isDataError(err) {
		return in.reject(ctx, a.msg, a.ev, &events.RejectError{Reason: events.ReasonProjection, Err: err})
	}
	if err != nil {
		return err
	}
	in.count(appended)
	_ = a.msg.Ack()
	return nil
}

func (in *Ingester) count(appended []postgres.Appended) {
	for _, a := range appended {
		if a.Duplicate {
			in.duplicates.Inc()
		} else {
			in.ingested.Inc()
		}
	}
}

// check decodes and validates m and makes sure the rack that published it
// (the subject, which NATS permissions confine) is the one it claims to be
// (the source).
func (in *Ingester) check(m jetstream.Msg) (events.Event, error) {
	ev, err := in.validator.Decode(m.Data())
	if err != nil {
		return ev, err
	}
	subjRack := events.RackIDFromSubject(m.Subject())
	if subjRack == "" || events.RackIDFromSource(ev.Source) != subjRack {
		return ev, &events.RejectError{Reason: events.ReasonWrongSubject,
			Err: fmt.Errorf("source %q published on %s", ev.Source, m.Subject())}
	}
	if want := events.RackEventSubject(subjRack, ev.Type); want != m.Subject() {
		return ev, &events.RejectError{Reason: events.ReasonWrongSubject,
			Err: fmt.Errorf("type %s belongs on %s, not %s", ev.Type, want, m.Subject())}
	}
	return ev, nil
}

func (in *Ingester) reject(ctx context.Context, m jetstream.Msg, ev events.Event, err error) error {
	reason := events.ReasonMalformed
	var re *events.RejectError
	if errors.As(err, &re) {
		reason = re.Reason
	}
	r := postgres.Rejected{
		NATSSubject: m.Subject(), EventID: ev.ID, Type: ev.Type, Source: ev.Source,
		Reason: reason, Detail: err.Error(), Raw: m.Data(),
	}
	if rerr := in.store.RecordRejected(ctx, r); rerr != nil {
		return fmt.Errorf("record rejected message: %w", rerr)
	}
	in.rejected.WithLabelValues(reason).Inc()
	in.log.Warn("rejected rack message", "nats_subject", m.Subject(), "reason", reason, "err", err)
	_ = m.TermWithReason(reason)
	return nil
}
