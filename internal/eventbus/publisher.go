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
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Source and Subject name the emitter in the events_dropped events the
	// publisher itself emits; for a rack, events.RackSource(id) and
	// events.RackStreamName(id).
	Source  string
	Subject string
	// Buffer bounds the events waiting while NATS or the stream is away;
	// up to Batch more may be in flight.
	Buffer int
	// Batch is how many events are in flight at once.
	Batch int
	// AckTimeout bounds the wait for JetStream's acknowledgement of a batch.
	AckTimeout time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	Registerer prometheus.Registerer
}

// Publisher sends events to JetStream without ever blocking the caller: a
// TFTP transfer must not wait on NATS. Events wait in a bounded buffer while
// NATS is away and go out on reconnect; when the buffer is full the oldest
// are dropped, counted, and reported in an events_dropped event as soon as
// publishing works again.
type Publisher struct {
	js  jetstream.JetStream
	cfg PublisherConfig
	log *slog.Logger

	mu           sync.Mutex
	queue        []events.Event
	dropped      int64 // not yet reported
	droppedTypes map[string]int64
	droppedSince time.Time
	totalDropped int64
	report       *events.Event // a drop report that failed, to send first
	idle         chan struct{} // closed when queue and in-flight are empty
	inflight     int
	wake         chan struct{}

	// While NATS is away every retry fails; the log says so when it
	// starts, every failLogEvery while it lasts, and when it ends.
	failingSince time.Time
	lastFailLog  time.Time
	quietFails   int

	published prometheus.Counter
	dropCount prometheus.Counter
	failures  prometheus.Counter
	buffered  prometheus.GaugeFunc
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
		js:           js,
		cfg:          cfg,
		log:          cfg.Logger,
		droppedTypes: map[string]int64{},
		wake:         make(chan struct{}, 1),
		idle:         make(chan struct{}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_published_total", Help: "Events acknowledged by JetStream.",
		}),
		dropCount: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_dropped_total", Help: "Events dropped because the publish buffer was full.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_events_publish_failures_total", Help: "Publish attempts that failed and were retried.",
		}),
	}
	close(p.idle)
	p.buffered = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_events_buffered", Help: "Events waiting to be published.",
	}, func() float64 { return float64(p.Buffered()) })
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(p.published, p.dropCount, p.failures, p.buffered)
	}
	return p
}

// Publish queues e. It never blocks.
func (p *Publisher) Publish(e events.Event) {
	p.mu.Lock()
	if p.settledLocked() {
		p.idle = make(chan struct{})
	}
	if len(p.queue) >= p.cfg.Buffer {
		p.countDrop(p.queue[0])
		p.queue = p.queue[1:]
	}
	p.queue = append(p.queue, e)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Buffered returns how many events wait to be published.
func (p *Publisher) Buffered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.queue) + p.inflight
	if p.report != nil {
		n++
	}
	return n
}

// settledLocked is true when nothing waits or is in flight; p.mu is held.
func (p *Publisher) settledLocked() bool {
	return len(p.queue) == 0 && p.inflight == 0 && p.report == nil
}

// Dropped returns how many events were dropped since start.
func (p *Publisher) Dropped() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.totalDropped
}

// Flush waits until every queued event is acknowledged or ctx ends.
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

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
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
			backoff = 50 * time.Millisecond
			continue
		}
		p.failures.Inc()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// take moves up to Batch events from the queue to in-flight, preceded by a
// report of dropped events when there is one to make.
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
	if p.dropped > 0 && p.cfg.Source != "" {
		types := make(map[string]int64, len(p.droppedTypes))
		for k, v := range p.droppedTypes {
			types[k] = v
		}
		ev, err := events.New(p.cfg.Source, events.TypeEventsDropped, p.cfg.Subject, p.cfg.Now(),
			events.EventsDropped{Count: p.dropped, Since: p.droppedSince, Types: types})
		if err == nil {
			batch = append(batch, ev)
			p.dropped = 0
			clear(p.droppedTypes)
		}
	}
	n := min(len(p.queue), p.cfg.Batch, p.cfg.Buffer)
	batch = append(batch, p.queue[:n]...)
	p.queue = p.queue[n:]
	p.inflight += len(batch)
	return batch
}

// countDrop records that e was dropped; p.mu is held.
func (p *Publisher) countDrop(e events.Event) {
	if p.dropped == 0 {
		p.droppedSince = p.cfg.Now()
	}
	p.dropped++
	p.totalDropped++
	p.droppedTypes[e.Type]++
	p.dropCount.Inc()
}

// settle puts failed events back at the head of the queue, keeping order.
func (p *Publisher) settle(batch []events.Event, failed []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight -= len(batch)
	if len(failed) > 0 {
		// A failed drop report is kept aside, not queued: it must not be
		// dropped itself when the queue overflows, which would turn a
		// count of many lost events into a count of one. Several pending
		// reports (rare: a report failing twice around a new one) keep
		// the oldest aside and queue the rest.
		kept := failed[:0:0]
		for _, e := range failed {
			if e.Type == events.TypeEventsDropped && e.Source == p.cfg.Source && p.report == nil {
				r := e
				p.report = &r
				continue
			}
			kept = append(kept, e)
		}
		failed = kept
		// Failed events go back in front, in order; if that overflows the
		// bound, the oldest go.
		p.queue = append(failed, p.queue...)
		for len(p.queue) > p.cfg.Buffer {
			p.countDrop(p.queue[0])
			p.queue = p.queue[1:]
		}
	}
	if p.settledLocked() {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
}

func (p *Publisher) send(ctx context.Context, batch []events.Event) (failed []events.Event) {
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, e := range batch {
		msg, err := Message(e)
		if err != nil {
			// An event that cannot be encoded never will be; drop it loudly.
			p.log.Error("dropping unencodable event", "event_id", e.ID, "type", e.Type, "err", err)
			continue
		}
		f, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			failed = append(failed, batch[i:]...)
			p.logFailure(err)
			return p.await(ctx, batch[:i], futures[:i], failed)
		}
		futures[i] = f
	}
	return p.await(ctx, batch, futures, failed)
}

func (p *Publisher) await(ctx context.Context, batch []events.Event, futures []jetstream.PubAckFuture, failed []events.Event) []events.Event {
	timer := time.NewTimer(p.cfg.AckTimeout)
	defer timer.Stop()
	var first error
	expired := false
	for i, f := range futures {
		if f == nil {
			continue
		}
		if expired {
			// Past the deadline: take what has arrived, retry the rest.
			select {
			case <-f.Ok():
				p.published.Inc()
			default:
				failed = append(failed, batch[i])
			}
			continue
		}
		select {
		case <-f.Ok():
			p.published.Inc()
		case err := <-f.Err():
			first = cmp(first, err)
			failed = append(failed, batch[i])
		case <-timer.C:
			first = cmp(first, errors.New("ack timeout"))
			failed = append(failed, batch[i])
			expired = true
		case <-ctx.Done():
			failed = append(failed, batch[i])
			expired = true
		}
	}
	if first != nil {
		p.logFailure(first)
	} else if len(failed) == 0 {
		p.recovered()
	}
	return failed
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
