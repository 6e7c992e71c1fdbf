package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/journal"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Source and Subject name the emitter in the events_dropped events the
	// publisher itself emits; for a rack, events.RackSource(id) and
	// events.RackStreamName(id).
	Source  string
	Subject string
	// Journal, when set, makes the publisher durable: every event goes to
	// the journal first and leaves it once JetStream acknowledged it (see
	// the package documentation). Without it, events wait in memory only.
	Journal *journal.Journal
	// Buffer bounds the events waiting in memory: without a journal, while
	// NATS or the stream is away (up to Batch more, sent once and failed,
	// wait to be sent again); with one, for the next group commit.
	Buffer int
	// Batch is how many events are in flight at once.
	Batch int
	// AckTimeout bounds the wait for JetStream's acknowledgement of a batch.
	AckTimeout time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	Registerer prometheus.Registerer
}

// maxGroup bounds the events of one journal group commit.
const maxGroup = 4096

// Publisher sends events to JetStream without ever blocking the caller: a
// TFTP transfer must not wait on NATS. Events wait in a bounded buffer
// (and, with a journal, on disk) while NATS is away and go out on
// reconnect. Every event is either delivered or counted as dropped, never
// both: an event dropped is one never handed to NATS (nor written to the
// journal), and the count goes out in an events_dropped event as soon as
// publishing works again.
type Publisher struct {
	js  jetstream.JetStream
	cfg PublisherConfig
	log *slog.Logger

	mu           sync.Mutex
	queue        []events.Event // never handed to NATS (nor to the journal)
	retry        []events.Event // sent once and failed: never dropped, at most Batch
	writing      int            // taken from queue for the journal, not yet committed
	dropped      int64          // not yet reported
	droppedTypes map[string]int64
	droppedSince time.Time
	totalDropped int64
	report       *events.Event // a drop report that failed, to send first
	idle         chan struct{} // closed when everything is published and reported
	inflight     int
	wake         chan struct{} // events in queue
	journalled   chan struct{} // records committed to the journal
	acked        chan struct{} // journal records acknowledged: room again
	lastFullLog  time.Time

	// While NATS is away every retry fails; the log says so when it
	// starts, every failLogEvery while it lasts, and when it ends.
	failingSince time.Time
	lastFailLog  time.Time
	quietFails   int

	published prometheus.Counter
	dropCount prometheus.Counter
	failures  prometheus.Counter
}

// NewPublisher returns a publisher; call Run to start sending.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) *Publisher {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 10000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Publisher{
		// A publish JetStream never answers is forgotten after
		// AckTimeout (and retried), so that unanswered ones cannot pile
		// up until every publish fails.
		js:           ForgettingAfter(js, cfg.AckTimeout),
		cfg:          cfg,
		log:          cfg.Logger,
		droppedTypes: map[string]int64{},
		wake:         make(chan struct{}, 1),
		journalled:   make(chan struct{}, 1),
		acked:        make(chan struct{}, 1),
		idle:         make(chan struct{}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_published_total", Help: "Events acknowledged by JetStream.",
		}),
		dropCount: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_dropped_total", Help: "Events dropped (publish buffer or journal full), each reported in an events_dropped event.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_publish_failures_total", Help: "Publish attempts that failed and were retried.",
		}),
	}
	if p.settledLocked() {
		// Not idle when the journal holds what an earlier run left.
		close(p.idle)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(p.published, p.dropCount, p.failures,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rackplane_events_buffered", Help: "Events waiting to be published, in memory or in the journal.",
			}, func() float64 { return float64(p.Buffered()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "rackplane_events_awaiting_journal", Help: "Events accepted but not yet written to the journal (lost by a crash now).",
			}, func() float64 { return float64(p.AwaitingJournal()) }))
	}
	return p
}

// Publish queues e. It never blocks: it waits neither for NATS nor for
// the disk. With a journal, e is durable once the next group commit is
// fsync'd (AwaitingJournal counts what is not yet).
func (p *Publisher) Publish(e events.Event) {
	p.mu.Lock()
	select {
	case <-p.idle: // settled until now
		p.idle = make(chan struct{})
	default:
	}
	p.queue = append(p.queue, e)
	p.overflowLocked()
	p.mu.Unlock()
	notify(p.wake)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// overflowLocked drops the oldest queued events beyond the bound; p.mu is
// held. Only events never handed to NATS or the journal are in the queue,
// so a dropped event is certain not to arrive.
func (p *Publisher) overflowLocked() {
	for len(p.queue) > p.cfg.Buffer {
		p.countDrop(p.queue[0].Type)
		p.queue[0] = events.Event{}
		p.queue = p.queue[1:]
	}
}

// Buffered returns how many events wait to be published.
func (p *Publisher) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.queue) + len(p.retry) + p.inflight + p.writing
	if p.report != nil {
		n++
	}
	if p.cfg.Journal != nil {
		n += p.cfg.Journal.Pending()
	}
	return n
}

// AwaitingJournal returns how many accepted events are not yet in the
// journal: those a crash now would lose. Without a journal, all buffered.
func (p *Publisher) AwaitingJournal() int {
	if p.cfg.Journal == nil {
		return p.Buffered()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) + p.writing
}

// settledLocked is true when nothing waits, is in flight or is left to
// report; p.mu is held. The journal's Pending takes no lock, so p.mu,
// which Publish takes, never waits on the journal's disk.
func (p *Publisher) settledLocked() bool {
	if len(p.queue) > 0 || len(p.retry) > 0 || p.inflight > 0 || p.writing > 0 || p.report != nil {
		return false
	}
	if p.cfg.Journal != nil {
		return p.dropped == 0 && p.cfg.Journal.Pending() == 0
	}
	return true
}

// checkIdleLocked closes idle once settled; p.mu is held.
func (p *Publisher) checkIdleLocked() {
	if p.settledLocked() {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

// Dropped returns how many events were dropped since start.
func (p *Publisher) Dropped() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.totalDropped
}

// Flush waits until every queued event is acknowledged (and every drop
// reported) or ctx ends.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("flush: %d events unpublished: %w", p.Buffered(), ctx.Err())
	}
}

// Run publishes until ctx ends. With a journal, the events still in
// memory then are written to it before Run returns.
func (p *Publisher) Run(ctx context.Context) error {
	if p.cfg.Journal != nil {
		return p.runJournalled(ctx)
	}
	backoff := newBackoff()
	for {
		batch := p.take()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-p.wake:
				continue
			}
		}
		failed := p.send(ctx, batch)
		p.settle(batch, failed)
		if len(failed) == 0 {
			backoff.reset()
			continue
		}
		p.failures.Inc()
		if !backoff.wait(ctx) {
			return nil
		}
	}
}

// retryBackoff spaces retries while publishing fails: 50ms doubling to 2s.
type retryBackoff struct{ d time.Duration }

func newBackoff() *retryBackoff { return &retryBackoff{d: 50 * time.Millisecond} }

func (b *retryBackoff) reset() { b.d = 50 * time.Millisecond }

// wait sleeps for the current delay and doubles it; false if ctx ended.
func (b *retryBackoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, 2*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dropReportLocked builds the events_dropped event of the drops not yet
// reported; ok is false when there are none (or no Source to report as).
// p.mu is held.
func (p *Publisher) dropReportLocked() (ev events.Event, count int64, types map[string]int64, ok bool) {
	if p.dropped == 0 || p.cfg.Source == "" {
		return events.Event{}, 0, nil, false
	}
	types = make(map[string]int64, len(p.droppedTypes))
	for k, v := range p.droppedTypes {
		types[k] = v
	}
	ev, err := events.New(p.cfg.Source, events.TypeEventsDropped, p.cfg.Subject, p.cfg.Now(),
		events.EventsDropped{Count: p.dropped, Since: p.droppedSince, Types: types})
	if err != nil {
		return events.Event{}, 0, nil, false
	}
	return ev, p.dropped, types, true
}

// reportedLocked takes count and types off the drops to report; p.mu is
// held.
func (p *Publisher) reportedLocked(count int64, types map[string]int64) {
	p.dropped -= count
	for k, v := range types {
		if p.droppedTypes[k] -= v; p.droppedTypes[k] <= 0 {
			delete(p.droppedTypes, k)
		}
	}
	if p.dropped > 0 {
		p.droppedSince = p.cfg.Now()
	}
}

// take moves up to Batch events to in-flight: a failed drop report first,
// then a report of new drops, the events to send again, then new ones.
func (p *Publisher) take() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var batch []events.Event
	if p.report != nil {
		// A report that failed goes again as it was, under the same id, so
		// JetStream drops it if the failure was only a lost ack.
		batch = append(batch, *p.report)
		p.report = nil
	}
	if ev, count, types, ok := p.dropReportLocked(); ok {
		batch = append(batch, ev)
		p.reportedLocked(count, types)
	}
	batch = append(batch, p.retry...)
	p.retry = nil
	n := min(len(p.queue), max(0, p.cfg.Batch-len(batch)))
	batch = append(batch, p.queue[:n]...)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	p.inflight += len(batch)
	return batch
}

// countDrop records that an event of type typ was dropped; p.mu is held.
func (p *Publisher) countDrop(typ string) {
	if p.dropped == 0 {
		p.droppedSince = p.cfg.Now()
	}
	p.dropped++
	p.totalDropped++
	p.droppedTypes[typ]++
	p.dropCount.Inc()
}

// settle keeps the failed events of a batch to be sent again first, in
// order. They were handed to NATS and may yet arrive (from the client's
// reconnect buffer), so they are never dropped: counting them as dropped
// could count an event that is delivered.
func (p *Publisher) settle(batch []events.Event, failed []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight -= len(batch)
	for _, e := range failed {
		// A failed drop report is kept aside: it goes first next time.
		if e.Type == events.TypeEventsDropped && e.Source == p.cfg.Source && p.report == nil {
			r := e
			p.report = &r
			continue
		}
		p.retry = append(p.retry, e)
	}
	p.checkIdleLocked()
}

func (p *Publisher) send(ctx context.Context, batch []events.Event) (failed []events.Event) {
	msgs := make([]*nats.Msg, len(batch))
	for i, e := range batch {
		msg, err := Message(e)
		if err != nil {
			// An event that cannot be encoded never will be; drop it loudly.
			p.log.Error("dropping unencodable event", "event_id", e.ID, "type", e.Type, "err", err)
			p.mu.Lock()
			p.countDrop(e.Type)
			p.mu.Unlock()
			continue
		}
		msgs[i] = msg
	}
	for i, ok := range p.publishAll(ctx, msgs) {
		if !ok && msgs[i] != nil {
			failed = append(failed, batch[i])
		}
	}
	return failed
}

// publishAll publishes msgs (nil ones are skipped) and says which JetStream
// acknowledged.
func (p *Publisher) publishAll(ctx context.Context, msgs []*nats.Msg) []bool {
	acked := make([]bool, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	var first error
	for i, m := range msgs {
		if m == nil {
			continue
		}
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			first = err
			break
		}
		futures[i] = f
	}
	timer := time.NewTimer(p.cfg.AckTimeout)
	defer timer.Stop()
	expired := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		if expired {
			// Past the deadline: take what has arrived, retry the rest.
			select {
			case <-f.Ok():
				acked[i] = true
			default:
			}
			continue
		}
		select {
		case <-f.Ok():
			acked[i] = true
		case err := <-f.Err():
			first = cmp(first, err)
		case <-timer.C:
			first = cmp(first, errors.New("ack timeout"))
			expired = true
		case <-ctx.Done():
			expired = true
		}
	}
	all := true
	for i, ok := range acked {
		if ok {
			p.published.Inc()
		} else if msgs[i] != nil {
			all = false
		}
	}
	if first != nil {
		p.logFailure(first)
	} else if all {
		p.recovered()
	}
	return acked
}

// failLogEvery spaces the log lines of a long publishing outage.
const failLogEvery = 30 * time.Second

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (p *Publisher) recovered() {
	p.mu.Lock()
	since := p.failingSince
	p.failingSince, p.quietFails = time.Time{}, 0
	p.mu.Unlock()
	if !since.IsZero() {
		p.log.Info("publishing events again", "failing_for", p.cfg.Now().Sub(since).Round(time.Millisecond).String())
	}
}

func (p *Publisher) logFailure(err error) {
	now := p.cfg.Now()
	p.mu.Lock()
	first := p.failingSince.IsZero()
	if first {
		p.failingSince = now
	}
	if !first && now.Sub(p.lastFailLog) < failLogEvery {
		p.quietFails++
		p.mu.Unlock()
		return
	}
	since, quiet := p.failingSince, p.quietFails
	p.lastFailLog, p.quietFails = now, 0
	p.mu.Unlock()
	if first {
		p.log.Warn("publishing events failed, will retry", "err", err, "buffered", p.Buffered())
		return
	}
	p.log.Warn("publishing events still failing, retrying", "err", err, "buffered", p.Buffered(),
		"failing_for", now.Sub(since).Round(time.Second).String(), "failures_not_logged", quiet)
}

// Message builds the NATS message of e: JSON body, subject from source and
// type, and the event id as Nats-Msg-Id so JetStream drops a republished
// duplicate.
func Message(e events.Event) (*nats.Msg, error) {
	subj, err := events.SubjectFor(e)
	if err != nil {
		return nil, err
	}
	body, err := events.Encode(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subj)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, e.ID)
	return m, nil
}
