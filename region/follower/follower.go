package follower

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
)

// Name is the follower's cursor name.
const Name = "region-follower"

// Follower follows the log.
type Follower struct {
	db       *postgres.DB
	machines Machines
	preseeds ShippedPreseeds
	log      *slog.Logger
	cfg      Config
	delay    prometheus.Histogram

	discovered prometheus.Counter
	refused    *prometheus.CounterVec
	// Refused discoveries since the last discovery_refused events, by
	// rack, and when those went out.
	refusals map[string]*events.DiscoveryRefused
	flushed  time.Time
}

// ShippedPreseeds stores the default preseeds racks ship
// (preseed.Service).
type ShippedPreseeds interface {
	StoreShipped(ctx context.Context, rackID string, p events.ShippedPreseed, cause *events.Event) error
}

// Machines is what the follower asks of the machine lifecycle
// (machine.Service), which decides how: make a machine of a MAC nobody
// knows, within limits, and take a commissioning agent's outcome.
type Machines interface {
	Discover(ctx context.Context, mac, rackID string, lim machine.DiscoveryLimits, meta machine.Meta) (bool, error)
	Get(ctx context.Context, id string) (rackplane.Machine, error)
	CommissioningReported(ctx context.Context, id, operationID string, success bool, message string, meta machine.Meta) (machine.Result, error)
	ErasingReported(ctx context.Context, id, operationID string, success bool, message string, meta machine.Meta) (machine.Result, error)
	DiskWrittenReported(ctx context.Context, id, operationID string, success bool, message string, meta machine.Meta) (machine.Result, error)
}

// Wake wakes a reader waiting at the end of the log.
type Wake interface {
	// Next is closed at the next append after the call.
	Next() <-chan struct{}
}

// Config configures a Follower.
type Config struct {
	// Wake, when set, wakes the follower as soon as events are appended.
	Wake Wake
	// Poll is how often the follower looks at the end of the log without
	// being woken: a fallback for a missed notification, or the only way
	// without Wake.
	Poll time.Duration
	// Registerer, when set, takes the follower's metrics.
	Registerer prometheus.Registerer
	// Discovery caps the machines made of boots of unknown MACs (zero:
	// no caps). A boot refused by a cap makes no machine; the refusals
	// of each rack are summed up in one discovery_refused event per
	// SummaryInterval (default 1m).
	Discovery       machine.DiscoveryLimits
	SummaryInterval time.Duration
}

// New returns a follower. It fails when cfg.Registerer holds a
// follower's metric already.
func New(db *postgres.DB, machines Machines, preseeds ShippedPreseeds, log *slog.Logger, cfg Config) (*Follower, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.SummaryInterval <= 0 {
		cfg.SummaryInterval = time.Minute
	}
	f := &Follower{db: db, machines: machines, preseeds: preseeds, log: log, cfg: cfg,
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rackplane_region_follower_delay_seconds",
			Help:    "Time from an event's append to the follower reacting to it (a boot of an unknown MAC becoming a machine, say).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		discovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_machines_discovered_total",
			Help: "Machines made of boots of unknown MACs.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_discoveries_refused_total",
			Help: "Boots of unknown MACs that made no machine, a discovery cap reached, by cap (rack_rate: -discovery-per-rack-per-minute, new: -discovery-max-new).",
		}, []string{"limit"}),
		refusals: map[string]*events.DiscoveryRefused{},
		flushed:  time.Now(),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{f.delay, f.discovered, f.refused} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, rackplane.WrapError(rackplane.ECONFLICT, err, "follower metrics")
			}
		}
	}
	return f, nil
}

// Run follows the log until ctx ends.
func (f *Follower) Run(ctx context.Context) error {
	var cur postgres.Cursor
	err := backoff.Retry(ctx, backoff.Policy{}, func(ctx context.Context) (err error) {
		cur, err = f.db.LoadCursor(ctx, Name)
		return err
	}, func(err error, wait time.Duration) { f.log.Warn("follower cursor", "err", err, "retry_in", wait) })
	if err != nil {
		return nil // ctx ended
	}
	defer func() {
		// The refusals of the interval it stops in still go out.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		f.summarize(fctx)
	}()
	retry := backoff.New(backoff.Policy{})
	filter := postgres.ReadFilter{Types: []string{events.TypeBootHandoff, events.TypeCapabilitiesReported, events.TypeAgentFinished}}
	for ctx.Err() == nil {
		// Asked for before the read, so an append that lands after the
		// read still wakes the wait below.
		var woken <-chan struct{}
		if f.cfg.Wake != nil {
			woken = f.cfg.Wake.Next()
		}
		batch, next, err := f.db.ReadEvents(ctx, cur, 200, filter)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Warn("follower read", "err", err)
				retry.Wait(ctx)
			}
			continue
		}
		retry.Reset()
		for _, e := range batch {
			f.delay.Observe(time.Since(e.RecordedAt).Seconds())
			if err := f.handle(ctx, e); err != nil && ctx.Err() == nil {
				f.log.Warn("follower could not react to an event", "event_id", e.ID, "type", e.Type, "err", err)
			}
		}
		if next != cur {
			if err := f.db.SaveCursor(ctx, Name, next); err != nil {
				f.log.Warn("follower cursor", "err", err)
			}
			cur = next
		}
		if time.Since(f.flushed) >= f.cfg.SummaryInterval {
			f.summarize(ctx)
		}
		if len(batch) == 0 {
			sleep(ctx, woken, f.cfg.Poll)
		}
	}
	return nil
}

func (f *Follower) handle(ctx context.Context, e postgres.Stored) error {
	switch e.Type {
	case events.TypeBootHandoff:
		return f.discover(ctx, e)
	case events.TypeCapabilitiesReported:
		return f.shippedPreseeds(ctx, e)
	case events.TypeAgentFinished:
		return f.agentFinished(ctx, e)
	}
	return nil
}

// agentFinished has the lifecycle take a commissioning or erasing agent's
// outcome. The rack checked the agent's credential, which is the
// operation's; the region takes the outcome only from the rack that
// serves the machine's boot (machine.BootRack; any rack while the machine
// has none) and only for its current operation. Racks hear only their own machines'
// decisions, so another rack that speaks for the machine has no boot of
// it to vouch for: a machine moved to another rack meanwhile, or a rack
// that misbehaves. A report refused is logged and changes nothing, as a
// report for an earlier operation (an agent that speaks late) does.
func (f *Follower) agentFinished(ctx context.Context, e postgres.Stored) error {
	var d events.AgentFinished
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	report, what := f.machines.CommissioningReported, "commissioning"
	switch d.Purpose {
	case events.BootPurposeCommission:
	case events.BootPurposeErase:
		report, what = f.machines.ErasingReported, "erase"
	case events.BootPurposeDeploy:
		// The disk image is written (or not): the machine stays
		// deploying until the installed system phones home.
		report, what = f.machines.DiskWrittenReported, "disk image"
	default:
		return nil // rescue's agent ends nothing the lifecycle tracks
	}
	rackID := events.RackIDFromSource(e.Source)
	log := f.log.With("machine_id", d.MachineID, "operation_id", d.OperationID, "rack_id", rackID, "event_id", e.ID, "purpose", d.Purpose)
	m, err := f.machines.Get(ctx, d.MachineID)
	if rackplane.ErrorCode(err) == rackplane.ENOTFOUND {
		log.Info(what + " outcome for a machine the region does not have: ignored")
		return nil
	}
	if err != nil {
		return err
	}
	if boot := machine.BootRack(m); boot != "" && boot != rackID {
		log.Warn(what+" outcome from a rack that does not serve the machine's boot: ignored", "boot_rack_id", boot)
		return nil
	}
	_, err = report(ctx, d.MachineID, d.OperationID, d.Success, d.Message,
		machine.Meta{Actor: "rack:" + rackID, Cause: &e.Event})
	switch {
	case errors.Is(err, machine.ErrMovedOn):
		log.Info(what + " outcome for an operation the machine is no longer in: ignored")
		return nil
	case rackplane.ErrorCode(err) == rackplane.ECONFLICT || rackplane.ErrorCode(err) == rackplane.ENOTFOUND:
		// Marked failed or deleted meanwhile: the outcome is too late.
		log.Info(what+" outcome too late: ignored", "err", err)
		return nil
	case err != nil:
		return err
	}
	log.Info(what+" outcome taken", "success", d.Success)
	return nil
}

// discover has the lifecycle make a machine (status new) for a MAC that
// asked a rack for its boot config and that no machine has.
func (f *Follower) discover(ctx context.Context, e postgres.Stored) error {
	var h events.BootHandoff
	if err := e.DecodeData(&h); err != nil {
		return err
	}
	if h.MAC == "" || h.MachineID != "" {
		return nil
	}
	rackID := events.RackIDFromSource(e.Source)
	made, err := f.machines.Discover(ctx, h.MAC, rackID, f.cfg.Discovery, machine.Meta{Actor: "system:discovery", Cause: &e.Event})
	var capped *machine.DiscoveryCapped
	switch {
	case errors.As(err, &capped):
		f.refuse(rackID, h.MAC, capped.Limit)
		return nil
	case made:
		f.discovered.Inc()
	}
	return err
}

// refuse counts a boot of an unknown MAC on rack rackID that a cap kept
// from making a machine.
func (f *Follower) refuse(rackID, mac, limit string) {
	f.refused.WithLabelValues(limit).Inc()
	r := f.refusals[rackID]
	if r == nil {
		r = &events.DiscoveryRefused{RackID: rackID, Since: time.Now().UTC(), ByLimit: map[string]int64{},
			PerRackPerMinute: f.cfg.Discovery.PerRackPerMinute, MaxNew: f.cfg.Discovery.MaxNew}
		f.refusals[rackID] = r
	}
	r.Refused++
	r.ByLimit[limit]++
	if len(r.MACs) < maxRefusedMACs {
		r.MACs = append(r.MACs, mac)
	}
}

// maxRefusedMACs is how many MACs a discovery_refused event names.
const maxRefusedMACs = 10

// summarize sends one discovery_refused event for each rack with
// discoveries refused since the last ones. A rack whose event could not
// be appended keeps its count for the next time.
func (f *Follower) summarize(ctx context.Context) {
	f.flushed = time.Now()
	for rackID, r := range f.refusals {
		r.Until = time.Now().UTC()
		stream := events.RackStreamName(rackID)
		ev, err := events.New(events.RegionSource, events.TypeDiscoveryRefused, stream, r.Until, r)
		if err == nil {
			err = f.db.InTx(ctx, func(tx pgx.Tx) error {
				_, err := f.db.Emit(ctx, tx, stream, postgres.ExpectAny, ev)
				return err
			})
		}
		if err != nil {
			f.log.Warn("discovery_refused event not appended, kept for the next one", "rack_id", rackID, "err", err)
			continue
		}
		f.log.Warn("boots of unknown MACs made no machine: a discovery cap was reached", "rack_id", rackID,
			"refused", r.Refused, "by_limit", r.ByLimit, "per_rack_per_minute", r.PerRackPerMinute, "max_new", r.MaxNew)
		delete(f.refusals, rackID)
	}
}

// shippedPreseeds has each default preseed of a rack's snapshot stored as
// a version whose origin is the rack.
func (f *Follower) shippedPreseeds(ctx context.Context, e postgres.Stored) error {
	var c events.Capabilities
	if err := e.DecodeData(&c); err != nil {
		return err
	}
	rackID := events.RackIDFromSource(e.Source)
	for _, p := range c.Preseeds {
		if err := f.preseeds.StoreShipped(ctx, rackID, p, &e.Event); err != nil {
			return err
		}
	}
	return nil
}

// sleep waits for d, ctx's end, or woken.
func sleep(ctx context.Context, woken <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-woken:
	case <-t.C:
	}
}
