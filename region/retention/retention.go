package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/postgres"
)

// Config configures a Pruner.
type Config struct {
	// Policy says what goes; with neither MaxAge nor KeepPerSource set,
	// nothing does and Run only waits.
	Policy postgres.RetentionPolicy
	// Interval is the time between passes (default 5m).
	Interval   time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Pruner prunes telemetry from the log.
type Pruner struct {
	db  *postgres.DB
	cfg Config

	pruned   *prometheus.CounterVec
	duration prometheus.Histogram
	failures prometheus.Counter
}

// New returns a pruner on db. It fails when cfg.Registerer holds its
// metrics already.
func New(db *postgres.DB, cfg Config) (*Pruner, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Pruner{db: db, cfg: cfg,
		pruned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_events_pruned_total",
			Help: "Telemetry events deleted from the event log by retention (-telemetry-max-age, -telemetry-keep-per-rack), by type.",
		}, []string{"type"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rackplane_region_event_log_prune_seconds",
			Help:    "Time a retention pass of the event log took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 8),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_event_log_prune_failures_total",
			Help: "Retention passes of the event log that failed (the next one tries again).",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{p.pruned, p.duration, p.failures} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, rackplane.WrapError(rackplane.ECONFLICT, err, "retention metrics")
			}
		}
	}
	return p, nil
}

// Enabled says whether the policy prunes anything.
func (p *Pruner) Enabled() bool {
	return p.cfg.Policy.MaxAge > 0 || p.cfg.Policy.KeepPerSource > 0
}

// Run prunes once at start and then every Interval, until ctx ends.
func (p *Pruner) Run(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := p.Prune(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.Warn("event log retention pass failed, the next one tries again", "err", err, "retry_in", p.cfg.Interval)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Prune runs one pass and returns how many events of each type it
// deleted.
func (p *Pruner) Prune(ctx context.Context) (map[string]int64, error) {
	start := time.Now()
	pruned, err := p.db.PruneTelemetry(ctx, p.cfg.Policy, p.cfg.Now())
	p.duration.Observe(time.Since(start).Seconds())
	var total int64
	for typ, n := range pruned {
		p.pruned.WithLabelValues(typ).Add(float64(n))
		total += n
	}
	if err != nil {
		p.failures.Inc()
	}
	if total > 0 {
		p.cfg.Logger.Info("telemetry pruned from the event log", "events", total, "by_type", pruned,
			"max_age", p.cfg.Policy.MaxAge.String(), "keep_per_rack", p.cfg.Policy.KeepPerSource)
	}
	return pruned, err
}
