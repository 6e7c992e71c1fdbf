package deploywatch

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
)

// Config configures a Watch.
type Config struct {
	// Timeout is how long a deployment may go without its installer's
	// report. Zero turns the watch off.
	Timeout time.Duration
	// Tick is how often deployments are checked.
	Tick       time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Deployments fails overdue deployments; the machine lifecycle
// (machine.Service) decides how.
type Deployments interface {
	// TimeOutDeployments fails at most limit deployments that have gone
	// without their installer's report for timeout, and returns them.
	TimeOutDeployments(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error)
}

// Watch fails overdue deployments.
type Watch struct {
	store    Deployments
	cfg      Config
	log      *slog.Logger
	timedOut prometheus.Counter
}

// New returns a watch.
func New(store Deployments, cfg Config) (*Watch, error) {
	if cfg.Tick <= 0 {
		cfg.Tick = min(max(cfg.Timeout/10, 100*time.Millisecond), 30*time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watch{store: store, cfg: cfg, log: cfg.Logger,
		timedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_deployments_timed_out_total",
			Help: "Deployments marked failed because their installer did not report in time.",
		}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(w.timedOut); err != nil {
			return nil, fmt.Errorf("deploywatch metrics: %w", err)
		}
	}
	return w, nil
}

// Run checks every Tick until ctx ends. A database error is logged and
// tried again at the next tick: the watch is never why the region stops.
func (w *Watch) Run(ctx context.Context) error {
	if w.cfg.Timeout <= 0 {
		return nil
	}
	t := time.NewTicker(w.cfg.Tick)
	defer t.Stop()
	for {
		if _, err := w.Check(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("deployment watch", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check fails every deployment that is overdue now and returns how many it
// failed.
func (w *Watch) Check(ctx context.Context) (int, error) {
	if w.cfg.Timeout <= 0 {
		return 0, nil
	}
	const page = 100
	failed := 0
	for {
		ms, err := w.store.TimeOutDeployments(ctx, w.cfg.Timeout, page)
		for _, m := range ms {
			w.timedOut.Inc()
			w.log.Warn("deployment timed out", "machine_id", m.ID, "hostname", m.Hostname, "timeout", w.cfg.Timeout)
		}
		failed += len(ms)
		// A full page that failed nothing moved on meanwhile: the next
		// tick looks again rather than spin on it.
		if err != nil || len(ms) == 0 || len(ms) < page {
			return failed, err
		}
	}
}
