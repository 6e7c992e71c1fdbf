package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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
	// Concurrency is how many batches may be stored at once, each in a
	// transaction of its own. Batches stored at once hold different
	// racks' events (by the rack of their subject): a rack's events go
	// in in the order it published them, while other racks' commit
	// beside them.
	Concurrency int
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

// DefaultConfig returns the defaults; New takes a zero field of its
// Config from here.
func DefaultConfig() Config {
	return Config{Batch: 500, Concurrency: 4, MaxWait: 5 * time.Millisecond, AckWait: 5 * time.Second}
}

// MaxConcurrency bounds Config.Concurrency: each batch being stored holds
// a database connection.
const MaxConcurrency = 64

// Store is what the ingester needs of the event store.
type Store interface {
	// InTxNotifyLater runs a transaction whose appends do not wake the
	// log's readers: the ingester calls NotifyAppended after its commits.
	InTxNotifyLater(ctx context.Context, fn func(tx pgx.Tx) error) error
	NotifyAppended(ctx context.Context) error
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

	// committed is signalled after each transaction that may have
	// appended; notifier wakes the log's readers for it.
	committed chan struct{}
}

// New returns an ingester.
func New(js jetstream.JetStream, store Store, v *events.Validator, cfg Config) *Ingester {
	def := DefaultConfig()
	if cfg.Batch <= 0 {
		cfg.Batch = def.Batch
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = def.Concurrency
	}
	cfg.Concurrency = min(cfg.Concurrency, MaxConcurrency)
	if cfg.AckWait <= 0 {
		cfg.AckWait = def.AckWait
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = def.MaxWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	in := &Ingester{
		js: js, store: store, validator: v, cfg: cfg, log: cfg.Logger,
		committed: make(chan struct{}, 1),
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
			Durable:     ConsumerName,
			Description: "region: rack events into the event store",
			// One acknowledgement per event, not AckAll per batch: the
			// regions share this consumer, and AckAll of a sequence
			// acknowledges every message below it, those delivered to
			// another region and not yet stored by it too, which a
			// region killed then would lose. Nor would AckAll buy much:
			// the server's ack handling was 3% of the racks' and NATS's
			// CPU in BenchmarkIngestVsCopy.
			AckPolicy: jetstream.AckExplicitPolicy,
			AckWait:   in.cfg.AckWait,
			// Room for every batch being stored and the next ones
			// queued, and the iterator's read-ahead.
			MaxAckPending: in.cfg.Batch * max(20, 3*in.cfg.Concurrency+4),
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
	// batches are on their way while these commit.
	it, err := cons.Messages(jetstream.PullMaxMessages(in.cfg.Batch * 4))
	if err != nil {
		return fmt.Errorf("consume rack events: %w", err)
	}
	defer it.Stop()
	return in.pipeline(ctx, it)
}

// arrival is a message as the reader hands it on: with the time it was
// read, from which its batch's MaxWait runs.
type arrival struct {
	msg jetstream.Msg
	at  time.Time
}

// pipeline reads messages into their racks' queues (lanes) while
// Concurrency storers each form a batch of lanes no other storer holds,
// decode and validate it, and store it (store1), holding its lanes until
// it is stored: a rack's events therefore go in in the order the rack
// published them, while batches of other racks commit at once. pipeline
// returns nil when ctx ends, an error when the consumer fails; either way
// only once every storer has stopped, so that the storers of a consumer
// made again never overtake those of the one before.
func (in *Ingester) pipeline(ctx context.Context, it jetstream.MessagesContext) error {
	l := newLanes(in.cfg.Batch, in.cfg.MaxWait)
	var wg sync.WaitGroup
	for range in.cfg.Concurrency {
		wg.Go(func() { in.storer(ctx, l) })
	}
	stored := make(chan struct{})
	notified := make(chan struct{})
	go func() {
		defer close(notified)
		in.notifier(ctx, stored)
	}()
	err := in.read(ctx, it, l)
	l.close()
	wg.Wait()
	close(stored)
	<-notified
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("consume rack events: %w", err)
	}
	return nil
}

// notifier wakes the log's readers after the storers' commits, until
// storersDone is closed and what they committed is notified. Ingest's
// transactions do not notify themselves (PostgreSQL would commit them one
// at a time if they did); each commit signals in.committed instead, and
// one notification at a time is sent, the next as soon as it is done if
// any storer committed meanwhile: a notification sent after a commit wakes
// a reader that read before it, so none waits for an event in the log.
func (in *Ingester) notifier(ctx context.Context, storersDone <-chan struct{}) {
	for {
		select {
		case <-in.committed:
		case <-storersDone:
			select {
			case <-in.committed:
			default:
				return
			}
		}
		if ctx.Err() == nil {
			in.notify(ctx)
			continue
		}
		// The last commits as the region stops: the readers of other
		// regions are still waiting.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		in.notify(sctx)
		cancel()
	}
}

// notify sends one notification, trying again while Postgres is away
// (readers then fall back on their own timers) until ctx ends.
func (in *Ingester) notify(ctx context.Context) {
	retry := backoff.New(backoff.Policy{Max: time.Second})
	for {
		err := in.store.NotifyAppended(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		wait := retry.Next()
		in.log.Warn("readers of the event log not notified of ingested events, will retry", "err", err, "retry_in", wait)
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// appendTx appends evs in a transaction of their own and has the log's
// readers notified after it: after an error too, as a commit whose answer
// was lost may have committed.
func (in *Ingester) appendTx(ctx context.Context, evs []events.Event) ([]postgres.Appended, error) {
	var appended []postgres.Appended
	err := in.store.InTxNotifyLater(ctx, func(tx pgx.Tx) (err error) {
		appended, err = in.store.AppendAny(ctx, tx, evs)
		return err
	})
	select {
	case in.committed <- struct{}{}:
	default: // a notification is due already, and will be sent after this commit
	}
	return appended, err
}

// read hands each message of it to its lane until ctx ends (nil) or the
// iterator is closed (its error).
func (in *Ingester) read(ctx context.Context, it jetstream.MessagesContext, l *lanes) error {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return err
			}
			// Missed heartbeats and the like: the iterator recovers by itself.
			in.log.Warn("waiting for rack events", "err", err)
			continue
		}
		l.push(arrival{m, time.Now()})
	}
}

// storer stores batches one after the other until the lanes are closed
// and empty, or ctx ends.
func (in *Ingester) storer(ctx context.Context, l *lanes) {
	var buf []arrival
	var held []int
	b := &batch{}
	for {
		var ok bool
		buf, held, ok = l.form(ctx, buf[:0], held[:0])
		if !ok {
			return
		}
		b.reset(buf[0].at)
		for _, a := range buf {
			in.add(b, a.msg)
		}
		clear(buf)
		stored := in.store1(ctx, b)
		l.release(held)
		if !stored {
			return
		}
	}
}

// laneCount is the number of lanes messages are spread over by their
// rack. More lanes than storers, so that the racks a storer holds seldom
// keep another from work; few enough to scan at each batch.
const laneCount = 256

// lanes holds the messages read and not yet in a batch, in one queue per
// rack (racks share a lane by a hash of their id), in the order they were
// read. A storer forming a batch takes lanes no other storer holds and
// holds them until its batch is stored, so that no later message of
// those racks can be stored before it.
//
// One storer forms a batch at a time, and it takes every lane with
// messages (up to Batch messages): under a trickle there is one batch, one
// transaction, per MaxWait, as with a single storer, and the region's
// transactions grow in number only with load. Under load, each storer's
// batch fills from fewer racks and the next storer takes other racks'
// lanes, so that Concurrency batches are stored at once.
//
// The queues have no bound of their own (the reader never waits for a busy
// storer, which would hold up the others): what they can hold is bounded
// by the consumer's MaxAckPending, the messages JetStream delivers before
// any is acknowledged.
type lanes struct {
	batch   int
	maxWait time.Duration
	forming chan struct{} // the turn to form a batch
	changed chan struct{} // a message arrived, a lane was released or closed

	mu     sync.Mutex
	queue  [laneCount][]arrival
	held   [laneCount]bool
	queued int // messages in the queues
	closed bool
	order  []int // scratch of takeLocked
}

func newLanes(batch int, maxWait time.Duration) *lanes {
	l := &lanes{batch: batch, maxWait: maxWait, forming: make(chan struct{}, 1), changed: make(chan struct{}, 1)}
	l.forming <- struct{}{}
	return l
}

func (l *lanes) push(a arrival) {
	i := laneOf(a.msg.Subject())
	l.mu.Lock()
	l.queue[i] = append(l.queue[i], a)
	l.queued++
	l.mu.Unlock()
	l.signal()
}

func (l *lanes) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.signal()
}

// release gives back the lanes of a batch stored (or given up).
func (l *lanes) release(held []int) {
	l.mu.Lock()
	for _, i := range held {
		l.held[i] = false
	}
	l.mu.Unlock()
	l.signal()
}

// signal wakes the storer forming a batch, if one waits.
func (l *lanes) signal() {
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

// form waits for its turn, then for messages in lanes no one holds, and
// once it has Batch of them or MaxWait has passed since the oldest was
// read (a batch closes on time however steadily messages keep coming),
// appends them to buf, oldest lanes first, and the lanes it now holds to
// held. ok is false when ctx ended, or the lanes are closed and empty.
func (l *lanes) form(ctx context.Context, buf []arrival, held []int) (_ []arrival, _ []int, ok bool) {
	select {
	case <-l.forming:
	case <-ctx.Done():
		return buf, held, false
	}
	defer func() { l.forming <- struct{}{} }()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		if l.closed && l.queued == 0 {
			l.mu.Unlock()
			return buf, held, false
		}
		free, oldest := 0, time.Time{}
		for i := range l.queue {
			if q := l.queue[i]; len(q) > 0 && !l.held[i] {
				free += len(q)
				if oldest.IsZero() || q[0].at.Before(oldest) {
					oldest = q[0].at
				}
			}
		}
		var wait <-chan time.Time
		if free > 0 {
			left := time.Until(oldest.Add(l.maxWait))
			if free >= l.batch || left <= 0 || l.closed {
				buf, held = l.takeLocked(buf, held)
				l.mu.Unlock()
				return buf, held, true
			}
			if timer == nil {
				timer = time.NewTimer(left)
			} else {
				timer.Reset(left)
			}
			wait = timer.C
		}
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-wait:
		case <-ctx.Done():
			return buf, held, false
		}
	}
}

// takeLocked moves up to Batch messages of the lanes no one holds into
// buf, the lanes whose first message is oldest first, and holds the lanes
// it took from. l.mu is held.
func (l *lanes) takeLocked(buf []arrival, held []int) ([]arrival, []int) {
	free := l.order[:0]
	for i := range l.queue {
		if len(l.queue[i]) > 0 && !l.held[i] {
			free = append(free, i)
		}
	}
	slices.SortFunc(free, func(a, b int) int { return l.queue[a][0].at.Compare(l.queue[b][0].at) })
	l.order = free
	for _, i := range free {
		if len(buf) >= l.batch {
			break
		}
		q := l.queue[i]
		n := min(len(q), l.batch-len(buf))
		buf = append(buf, q[:n]...)
		clear(q[:n])
		if n == len(q) {
			q = q[:0] // the array is reused by the lane's next messages
		} else {
			q = q[n:]
		}
		l.queue[i] = q
		l.queued -= n
		l.held[i] = true
		held = append(held, i)
	}
	return buf, held
}

// laneOf returns the lane of the rack that published on subject: an
// FNV-1a hash of the rack id, so that a rack's messages are always in the
// same lane. A subject that names no rack (its message will be rejected)
// hashes as a whole.
func laneOf(subject string) int {
	key := subject
	if rest, ok := strings.CutPrefix(subject, events.Prefix+".rack."); ok {
		if i := strings.IndexByte(rest, '.'); i >= 0 {
			key = rest[:i]
		}
	}
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % laneCount)
}

// store1 stores b, trying again while that fails: a batch is never
// skipped, so that a later one of its racks cannot overtake it and
// reorder a rack's events (its lanes stay held meanwhile). While it
// waits, its messages are kept from redelivery; those queued behind it
// may be redelivered meanwhile, and the copy that comes second is
// recognised by its event id. False when ctx ended first.
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

// batch is a batch of messages, decoded and validated. A storer keeps
// one and reuses its arrays from batch to batch.
type batch struct {
	start    time.Time
	msgs     []jetstream.Msg
	good     []accepted // those still to be stored
	bad      []refused
	recorded int // refusals recorded so far, should storing be tried again

	goodArr []accepted     // good as add filled it
	evs     []events.Event // the events of an append
}

// reset empties b for a batch whose first message was read at start.
func (b *batch) reset(start time.Time) {
	clear(b.msgs)
	clear(b.goodArr)
	clear(b.evs)
	*b = batch{start: start, msgs: b.msgs[:0], good: b.goodArr[:0], goodArr: b.goodArr[:0], evs: b.evs[:0]}
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

// add decodes and validates m into b: what rejecting or storing it
// needs, computed while other storers' batches are being stored.
func (in *Ingester) add(b *batch, m jetstream.Msg) {
	b.msgs = append(b.msgs, m)
	ev, err := in.check(m)
	if err != nil {
		b.bad = append(b.bad, refused{m, ev, err})
		return
	}
	b.good = append(b.good, accepted{m, ev})
	b.goodArr = b.good
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
	evs := b.evs[:0]
	for _, a := range good {
		evs = append(evs, a.ev)
	}
	b.evs = evs
	appended, err := in.appendTx(ctx, evs)
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
	appended, err := in.appendTx(ctx, []events.Event{a.ev})
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
	dups := 0
	for _, a := range appended {
		if a.Duplicate {
			dups++
		}
	}
	in.duplicates.Add(float64(dups))
	in.ingested.Add(float64(len(appended) - dups))
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
	if !onTypeSubject(m.Subject(), subjRack, ev.Type) {
		return ev, &events.RejectError{Reason: events.ReasonWrongSubject,
			Err: fmt.Errorf("type %s belongs on %s, not %s", ev.Type, events.RackEventSubject(subjRack, ev.Type), m.Subject())}
	}
	return ev, nil
}

// onTypeSubject reports whether subject is events.RackEventSubject(rack,
// typ), without building that for every message.
func onTypeSubject(subject, rack, typ string) bool {
	rest, ok := strings.CutPrefix(subject, events.Prefix+".rack.")
	if !ok {
		return false
	}
	if rest, ok = strings.CutPrefix(rest, rack); !ok {
		return false
	}
	rest, ok = strings.CutPrefix(rest, ".event.")
	return ok && rest == events.Name(typ)
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
