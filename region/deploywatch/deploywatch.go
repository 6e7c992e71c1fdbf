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
	// report. Zero turns the watch of deployments off.
	Timeout time.Duration
	// CommissionTimeout is how long a commissioning may go without its
	// agent's outcome. Zero turns the watch of commissionings off.
	CommissionTimeout time.Duration
	// EraseTimeout is how long an erase (a release's) may go without its
	// agent's outcome. Zero turns the watch of erases off.
	EraseTimeout time.Duration
	// Tick is how often operations are checked.
	Tick       time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Operations fails overdue operations; the machine lifecycle
// (machine.Service) decides how.
type Operations interface {
	// TimeOutDeployments fails at most limit deployments that have gone
	// without their installer's report for timeout, and returns them.
	TimeOutDeployments(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error)
	// TimeOutCommissionings fails at most limit commissionings that have
	// gone without their agent's outcome for timeout, and returns them.
	TimeOutCommissionings(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error)
	// TimeOutErasings fails at most limit erases that have gone without
	// their agent's outcome for timeout, and returns them.
	TimeOutErasings(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error)
}

// watched is one kind of operation the watch fails when overdue.
type watched struct {
	name     string // as logged: "deployment", "commissioning", "erase"
	timeout  time.Duration
	timeOut  func(ctx context.Context, timeout time.Duration, limit int) ([]rackplane.Machine, error)
	timedOut prometheus.Counter
}

// Watch fails overdue deployments, commissionings and erases.
type Watch struct {
	cfg   Config
	log   *slog.Logger
	kinds []watched
}

// New returns a watch.
func New(store Operations, cfg Config) (*Watch, error) {
	if cfg.Tick <= 0 {
		shortest := time.Duration(0)
		for _, t := range []time.Duration{cfg.Timeout, cfg.CommissionTimeout, cfg.EraseTimeout} {
			if t > 0 && (shortest <= 0 || t < shortest) {
				shortest = t
			}
		}
		cfg.Tick = min(max(shortest/10, 100*time.Millisecond), 30*time.Second)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Watch{cfg: cfg, log: cfg.Logger}
	deployments := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rackplane_region_deployments_timed_out_total",
		Help: "Deployments marked failed because their installer did not report in time.",
	})
	commissionings := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rackplane_region_commissionings_timed_out_total",
		Help: "Commissionings marked failed because their agent did not report its outcome in time.",
	})
	erases := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rackplane_region_erases_timed_out_total",
		Help: "Disk erases of releases marked failed because their agent did not report its outcome in time.",
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{deployments, commissionings, erases} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("deploywatch metrics: %w", err)
			}
		}
	}
	if cfg.Timeout > 0 {
		w.kinds = append(w.kinds, watched{name: "deployment", timeout: cfg.Timeout, timeOut: store.TimeOutDeployments, timedOut: deployments})
	}
	if cfg.CommissionTimeout > 0 {
		w.kinds = append(w.kinds, watched{name: "commissioning", timeout: cfg.CommissionTimeout, timeOut: store.TimeOutCommissionings,
			timedOut: commissionings})
	}
	if cfg.EraseTimeout > 0 {
		w.kinds = append(w.kinds, watched{name: "erase", timeout: cfg.EraseTimeout, timeOut: store.TimeOutErasings, timedOut: erases})
	}
	return w, nil
}

// Run checks every Tick until ctx ends. A database error is logged and
// tried again at the next tick: the watch is never why the region stops.
func (w *Watch) Run(ctx context.Context) error {
	if len(w.kinds) == 0 {
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

// Check fails every deployment, commissioning and erase that is overdue
// now and returns how many it failed. An error of one kind does not keep
// the others from being checked.
func (w *Watch) Check(ctx context.Context) (int, error) {
	failed := 0
	var first error
	for _, k := range w.kinds {
		n, err := w.check(ctx, k)
		failed += n
		if err != nil && first == nil {
			first = fmt.Errorf("%s timeouts: %w", k.name, err)
		}
	}
	return failed, first
}

func (w *Watch) check(ctx context.Context, k watched) (int, error) {
	const page = 100
	failed := 0
	for {
		ms, err := k.timeOut(ctx, k.timeout, page)
		for _, m := range ms {
			k.timedOut.Inc()
			w.log.Warn(k.name+" timed out", "machine_id", m.ID, "hostname", m.Hostname, "timeout", k.timeout)
		}
		failed += len(ms)
		// A full page that failed nothing moved on meanwhile: the next
		// tick looks again rather than spin on it.
		if err != nil || len(ms) == 0 || len(ms) < page {
			return failed, err
		}
	}
}
