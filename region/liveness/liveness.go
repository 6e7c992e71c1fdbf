package liveness

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/region/postgres"
)

// Config configures a Monitor.
type Config struct {
	// Misses is how many heartbeat intervals may pass without a heartbeat
	// before a rack is offline.
	Misses int
	// DefaultInterval applies to racks that did not say their interval.
	DefaultInterval time.Duration
	// Tick is how often racks are checked.
	Tick time.Duration
	// BadBeatEvery spaces the records of bad heartbeats on one subject:
	// a rack sends one every few seconds, and its author needs to see the
	// first (in the rejected events and the log), not a flood.
	BadBeatEvery time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Store is what the monitor needs of the region's database.
type Store interface {
	RackStatuses(ctx context.Context) ([]postgres.RackStatus, error)
	InTx(ctx context.Context, fn func(tx pgx.Tx) error) error
	Emit(ctx context.Context, tx pgx.Tx, stream string, expected int64, evs ...events.Event) ([]postgres.Appended, error)
	RecordRejected(ctx context.Context, r postgres.Rejected) error
}

// Monitor watches heartbeats.
type Monitor struct {
	nc        *nats.Conn
	store     Store
	validator *events.Validator
	cfg       Config
	log       *slog.Logger
	started   time.Time

	mu      sync.Mutex
	beats   map[string]time.Time // rack id → last heartbeat received here
	badSeen map[string]time.Time // NATS subject → last bad heartbeat recorded
	kick    chan struct{}
	// recording counts the rejected heartbeats being written; Run waits
	// for them. stopped (under mu) says Run is on its way out, so no
	// more are started.
	recording sync.WaitGroup
	stopped   bool
	// listening is true while the server has the monitor's subscription:
	// heartbeats sent from then on are heard (readiness).
	listening atomic.Bool

	heartbeats  prometheus.Counter
	badBeats    prometheus.Counter
	transitions *prometheus.CounterVec
}

// New returns a monitor.
func New(nc *nats.Conn, store Store, v *events.Validator, cfg Config) *Monitor {
	if cfg.Misses <= 0 {
		cfg.Misses = 3
	}
	if cfg.DefaultInterval <= 0 {
		cfg.DefaultInterval = 5 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.BadBeatEvery <= 0 {
		cfg.BadBeatEvery = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Monitor{
		nc: nc, store: store, validator: v, cfg: cfg, log: cfg.Logger,
		beats: map[string]time.Time{}, badSeen: map[string]time.Time{}, kick: make(chan struct{}, 1),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_heartbeats_total", Help: "Rack heartbeats received.",
		}),
		badBeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_heartbeats_rejected_total", Help: "Heartbeat messages that were not valid.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_rack_transitions_total", Help: "Racks declared offline or online.",
		}, []string{"to"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(m.heartbeats, m.badBeats, m.transitions)
	}
	return m
}

// Run receives heartbeats and checks racks until ctx ends.
// Listening reports whether the NATS server has the monitor's
// subscription, so that a heartbeat sent now is heard.
func (m *Monitor) Listening() bool { return m.listening.Load() }

func (m *Monitor) Run(ctx context.Context) error {
	m.started = m.cfg.Now()
	m.mu.Lock()
	m.stopped = false
	m.mu.Unlock()
	sub, err := m.nc.Subscribe(events.HeartbeatWildcard, m.onHeartbeat)
	if err != nil {
		return err
	}
	// Heartbeats are plain messages: one sent before the server has the
	// subscription is not heard. Readiness waits for the server to have it.
	lctx, stopListening := context.WithCancel(ctx)
	var flushed sync.WaitGroup
	flushed.Add(1)
	go func() {
		defer flushed.Done()
		retry := backoff.New(backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second})
		for {
			fctx, cancel := context.WithTimeout(lctx, 5*time.Second)
			err := m.nc.FlushWithContext(fctx)
			cancel()
			if err == nil {
				m.listening.Store(true)
				return
			}
			if !retry.Wait(lctx) {
				return
			}
		}
	}()
	defer func() {
		stopListening()
		flushed.Wait()
		m.listening.Store(false)
		_ = sub.Unsubscribe()
		m.mu.Lock()
		m.stopped = true
		m.mu.Unlock()
		m.recording.Wait()
	}()
	t := time.NewTicker(m.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.kick:
		}
		if err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("rack liveness check failed", "err", err)
		}
	}
}

func (m *Monitor) onHeartbeat(msg *nats.Msg) {
	ev, err := m.validator.Decode(msg.Data)
	rackID := events.RackIDFromSubject(msg.Subject)
	if err == nil && (ev.Type != events.TypeHeartbeat || events.RackIDFromSource(ev.Source) != rackID) {
		err = errors.New("not a heartbeat of the rack whose subject it came on")
	}
	if err != nil {
		m.badBeats.Inc()
		m.rejectBeat(msg, ev, err)
		return
	}
	m.heartbeats.Inc()
	m.mu.Lock()
	_, known := m.beats[rackID]
	m.beats[rackID] = m.cfg.Now()
	m.mu.Unlock()
	if !known {
		select { // a rack we had not heard from may be coming back: check now
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// rejectBeat records a bad heartbeat in the rejected events and the log,
// at most once per subject every BadBeatEvery: a rack whose heartbeats
// are refused stays offline, and its author must be able to see why.
func (m *Monitor) rejectBeat(msg *nats.Msg, ev events.Event, err error) {
	now := m.cfg.Now()
	m.mu.Lock()
	last, seen := m.badSeen[msg.Subject]
	due := !seen || now.Sub(last) >= m.cfg.BadBeatEvery
	if due {
		if len(m.badSeen) >= 10000 { // a sender inventing subjects cannot grow it for ever
			clear(m.badSeen)
		}
		m.badSeen[msg.Subject] = now
	}
	record := due && !m.stopped
	if record {
		m.recording.Add(1)
	}
	m.mu.Unlock()
	if !due {
		return
	}
	reason := events.ReasonMalformed
	var re *events.RejectError
	if errors.As(err, &re) {
		reason = re.Reason
	} else if ev.Type != "" {
		reason = events.ReasonWrongSubject
	}
	m.log.Warn("rejected heartbeat", "nats_subject", msg.Subject, "reason", reason, "err", err,
		"next_record_after", m.cfg.BadBeatEvery.String())
	r := postgres.Rejected{NATSSubject: msg.Subject, EventID: ev.ID, Type: ev.Type, Source: ev.Source,
		Reason: reason, Detail: err.Error(), Raw: msg.Data}
	if !record {
		return // Run has ended: the log line above is all there is
	}
	// Not in NATS's callback goroutine: heartbeats must not wait on the
	// database. The rate limit bounds these.
	go func() {
		defer m.recording.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.store.RecordRejected(ctx, r); err != nil {
			m.log.Warn("record rejected heartbeat", "err", err)
		}
	}()
}

// LastHeartbeat returns when this region instance last heard rackID.
func (m *Monitor) LastHeartbeat(rackID string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.beats[rackID]
	return t, ok
}

// Beating reports whether this region instance heard rackID within the
// time that keeps a rack online (Misses heartbeat intervals; interval 0:
// the default), and when it last did: a rack the log says is offline may
// have come back a moment ago, before the next check records it.
func (m *Monitor) Beating(rackID string, interval time.Duration) (time.Time, bool) {
	if interval <= 0 {
		interval = m.cfg.DefaultInterval
	}
	last, ok := m.LastHeartbeat(rackID)
	return last, ok && m.cfg.Now().Sub(last) <= time.Duration(m.cfg.Misses)*interval
}

// Check compares every rack's state with the heartbeats seen and emits the
// transitions due.
func (m *Monitor) Check(ctx context.Context) error {
	statuses, err := m.store.RackStatuses(ctx)
	if err != nil {
		return err
	}
	now := m.cfg.Now()
	for _, s := range statuses {
		interval := s.Interval
		if interval <= 0 {
			interval = m.cfg.DefaultInterval
		}
		deadline := time.Duration(m.cfg.Misses) * interval
		m.mu.Lock()
		last, seen := m.beats[s.ID]
		m.mu.Unlock()
		switch {
		case s.Online && !seen && now.Sub(m.started) > deadline:
			// Nothing heard since this instance started: use the last
			// heartbeat recorded, if any.
			m.transition(ctx, s, events.TypeRackOffline, s.LastHeartbeat, "no heartbeat since region start")
		case s.Online && seen && now.Sub(last) > deadline:
			m.transition(ctx, s, events.TypeRackOffline, &last, "missed heartbeats")
		case !s.Online && seen && now.Sub(last) <= deadline:
			m.transition(ctx, s, events.TypeRackOnline, &last, "heartbeats resumed")
		}
	}
	return nil
}

func (m *Monitor) transition(ctx context.Context, s postgres.RackStatus, typ string, last *time.Time, reason string) {
	var lastUTC *time.Time
	if last != nil {
		l := last.UTC().Truncate(time.Microsecond)
		lastUTC = &l
	}
	ev, err := events.New(events.RegionSource, typ, events.RackStreamName(s.ID), m.cfg.Now(),
		events.RackLiveness{RackID: s.ID, LastHeartbeat: lastUTC, Reason: reason})
	if err != nil {
		m.log.Error("build liveness event", "err", err)
		return
	}
	err = m.store.InTx(ctx, func(tx pgx.Tx) error {
		_, err := m.store.Emit(ctx, tx, events.RackStreamName(s.ID), s.Version, ev)
		return err
	})
	var conflict *postgres.ConflictError
	switch {
	case errors.As(err, &conflict):
		// Something happened to the rack meanwhile (another region
		// instance recorded the transition, or the rack re-registered);
		// the next check sees the new state.
	case err != nil:
		m.log.Warn("record rack transition", "rack_id", s.ID, "type", typ, "err", err)
	default:
		to := "online"
		if typ == events.TypeRackOffline {
			to = "offline"
		}
		m.transitions.WithLabelValues(to).Inc()
		m.log.Info("rack "+to, "rack_id", s.ID, "reason", reason)
	}
}
