package power

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// PollerConfig configures a Poller. A zero field is its default
// (DefaultPollerConfig).
type PollerConfig struct {
	// Tick is how often machines due are looked for.
	Tick time.Duration
	// Concurrency is how many polls run at once, across racks; each
	// rack's -power-concurrency bounds its own share again.
	Concurrency int
	// Batch is how many due machines one look takes at most (Once: one
	// round).
	Batch int
	// Timeout bounds each rack request.
	Timeout time.Duration
	// Backoff is how long a machine whose poll the rack did not answer
	// (as opposed to answering that the BMC failed) is left alone.
	Backoff    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// DefaultPollerConfig returns the defaults.
func DefaultPollerConfig() PollerConfig {
	return PollerConfig{Tick: 2 * time.Second, Concurrency: 16, Batch: 512, Timeout: 75 * time.Second, Backoff: time.Minute}
}

// Polls is what the poller needs of the database (postgres).
type Polls interface {
	DuePowerPolls(ctx context.Context, now time.Time, limit int, skip []string) ([]postgres.PowerPoll, error)
	RecordPowerPoll(ctx context.Context, p postgres.PowerPoll, found events.PowerReply, checkedAt time.Time) (bool, error)
	TryLead(ctx context.Context, key int64) (*postgres.Leader, error)
}

// Poller polls the power state of machines with power parameters, each
// at the interval its driving rack reports (events.Capabilities.
// PowerPollIntervalSeconds), jittered per machine, at most Concurrency at
// once, each slot taking the next machine due as soon as it is free (a
// BMC that hangs holds one slot, never a round). What a poll finds that
// the machine did not show is a power_state_changed event; a poll that
// finds nothing new only moves the machine's power_checked_at, so the
// event log grows with changes, not with polls. One region polls at a
// time: the one holding the poller's PostgreSQL advisory lock; another
// takes over when its session ends.
type Poller struct {
	svc   *Service
	store Polls
	cfg   PollerConfig
	log   *slog.Logger
	now   func() time.Time

	mu       sync.Mutex
	backoff  map[string]time.Time // machine id: left alone until
	inFlight map[string]bool

	polls *prometheus.CounterVec
}

// Poll results, the label of rackplane_region_power_polls_total.
const (
	pollUnchanged  = "unchanged"
	pollChanged    = "changed"
	pollNoAnswer   = "no_answer"
	pollRecordFail = "not_recorded"
)

// NewPoller returns a poller; it does nothing until Run.
func NewPoller(svc *Service, store Polls, cfg PollerConfig) (*Poller, error) {
	def := DefaultPollerConfig()
	if cfg.Tick <= 0 {
		cfg.Tick = def.Tick
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = def.Concurrency
	}
	if cfg.Batch <= 0 {
		cfg.Batch = def.Batch
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = def.Backoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Poller{svc: svc, store: store, cfg: cfg, log: cfg.Logger, now: cfg.Now, backoff: map[string]time.Time{}, inFlight: map[string]bool{},
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_power_polls_total",
			Help: "Power state polls of machines, by result: unchanged, changed (a power_state_changed event), no_answer (the rack did not answer; the machine is left alone for a while), not_recorded (a database error).",
		}, []string{"result"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(p.polls); err != nil {
			return nil, fmt.Errorf("power poll metrics: %w", err)
		}
	}
	return p, nil
}

// Run polls until ctx ends, while this region leads the polling, and
// returns when the polls it started have ended. A database error is
// logged and tried again at the next tick.
func (p *Poller) Run(ctx context.Context) error {
	var leader *postgres.Leader
	defer func() {
		if leader != nil {
			leader.Release()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait() // before the lock goes: no two regions poll at once
	slots := make(chan struct{}, p.cfg.Concurrency)
	t := time.NewTicker(p.cfg.Tick)
	defer t.Stop()
	for {
		if leader != nil && !leader.Alive(ctx) && ctx.Err() == nil {
			p.log.Warn("power poll: lost the polling lock (its database session ended); trying to take it again")
			leader.Release()
			leader = nil
		}
		if leader == nil && ctx.Err() == nil {
			var err error
			if leader, err = p.store.TryLead(ctx, postgres.LeaderPowerPoll); err != nil && ctx.Err() == nil {
				p.log.Warn("power poll", "err", err)
			} else if leader != nil {
				p.log.Info("power poll: this region polls the machines' power")
			}
		}
		if leader != nil {
			if err := p.dispatch(ctx, &wg, slots); err != nil && ctx.Err() == nil {
				p.log.Warn("power poll", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// skip returns the machines not to be polled now: in flight, or left
// alone after the rack did not answer.
func (p *Poller) skip(now time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, until := range p.backoff {
		if !until.After(now) {
			delete(p.backoff, id)
		}
	}
	out := slices.Collect(maps.Keys(p.backoff))
	for id := range p.inFlight {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// dispatch starts a poll of a machine due in each free slot.
func (p *Poller) dispatch(ctx context.Context, wg *sync.WaitGroup, slots chan struct{}) error {
	free := cap(slots) - len(slots)
	if free == 0 {
		return nil
	}
	now := p.now()
	due, err := p.store.DuePowerPolls(ctx, now, min(free, p.cfg.Batch), p.skip(now))
	if err != nil {
		return err
	}
	for _, m := range due {
		slots <- struct{}{}
		p.mu.Lock()
		p.inFlight[m.MachineID] = true
		p.mu.Unlock()
		wg.Add(1)
		go func() {
			defer func() {
				p.mu.Lock()
				delete(p.inFlight, m.MachineID)
				p.mu.Unlock()
				<-slots
				wg.Done()
			}()
			p.poll(ctx, m)
		}()
	}
	return nil
}

// Once polls the machines due now, at most Batch of them, Concurrency
// at a time, whether or not this region leads, and returns how many it
// polled when all have ended: a round, for benchmarks and tests.
func (p *Poller) Once(ctx context.Context) (int, error) {
	now := p.now()
	due, err := p.store.DuePowerPolls(ctx, now, p.cfg.Batch, p.skip(now))
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, p.cfg.Concurrency)
	for _, m := range due {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			p.poll(ctx, m)
		}()
	}
	wg.Wait()
	return len(due), nil
}

func (p *Poller) poll(ctx context.Context, m postgres.PowerPoll) {
	// What the poll finds is as of when it was asked: an action that
	// ends while the answer is on its way is newer, and stays.
	asked := p.now()
	res, err := p.svc.Poll(ctx, m.MachineID, p.cfg.Timeout)
	if res.Outcome == "" {
		// No answer from the rack (offline, not answering, the machine's
		// parameters changed): nothing is known of the BMC, so nothing is
		// recorded; the machine waits a while before the next try.
		if ctx.Err() == nil {
			p.polls.WithLabelValues(pollNoAnswer).Inc()
			p.log.Debug("power poll: no answer", "machine_id", m.MachineID, "rack_id", m.RackID, "err", err)
			p.mu.Lock()
			p.backoff[m.MachineID] = p.now().Add(p.cfg.Backoff)
			p.mu.Unlock()
		}
		return
	}
	found := events.PowerReply{MachineID: m.MachineID, Action: events.PowerStatus, State: res.State, OK: err == nil,
		Outcome: res.Outcome, Error: res.Error, DurationMS: res.DurationMS}
	changed, err := p.store.RecordPowerPoll(ctx, m, found, asked)
	switch {
	case err != nil:
		p.polls.WithLabelValues(pollRecordFail).Inc()
		if ctx.Err() == nil {
			p.log.Warn("power poll: record", "machine_id", m.MachineID, "err", err)
		}
	case changed:
		p.polls.WithLabelValues(pollChanged).Inc()
		p.log.Info("power state changed", "machine_id", m.MachineID, "rack_id", m.RackID, "state", res.State,
			"previous_state", m.State, "outcome", res.Outcome)
	default:
		p.polls.WithLabelValues(pollUnchanged).Inc()
	}
}
