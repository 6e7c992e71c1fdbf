package deploywatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

// Config configures a Watch.
type Config struct {
	// Timeout is how long a deployment may go without its installer's
	// report. Zero turns the watch off.
	Timeout time.Duration
	// Tick is how often deployments are checked.
	Tick       time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Store is what the watch needs of the region's database.
type Store interface {
	OverdueDeployments(ctx context.Context, before time.Time, limit int) ([]postgres.Machine, error)
	InTx(ctx context.Context, fn func(tx pgx.Tx) error) error
	EmitMachine(ctx context.Context, tx pgx.Tx, id string, expected int64, evs ...events.Event) ([]postgres.Appended, error)
}

// Watch fails overdue deployments.
type Watch struct {
	store    Store
	cfg      Config
	log      *slog.Logger
	timedOut prometheus.Counter
}

// New returns a watch.
func New(store Store, cfg Config) (*Watch, error) {
	if cfg.Tick <= 0 {
		cfg.Tick = min(max(cfg.Timeout/10, 100*time.Millisecond), 30*time.Second)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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
	failed := 0
	for {
		overdue, err := w.store.OverdueDeployments(ctx, w.cfg.Now().Add(-w.cfg.Timeout), 100)
		if err != nil {
			return failed, err
		}
		progressed := false
		for _, m := range overdue {
			ok, err := w.fail(ctx, m)
			if err != nil {
				return failed, err
			}
			if ok {
				failed++
				progressed = true
			}
		}
		if len(overdue) < 100 || !progressed {
			return failed, nil
		}
	}
}

// fail marks m failed unless its stream moved on since it was read (an
// installer's report, a release, another region instance): then the next
// check looks again.
func (w *Watch) fail(ctx context.Context, m postgres.Machine) (bool, error) {
	reason := fmt.Sprintf("the installer did not report within the deployment timeout of %s", w.cfg.Timeout)
	ev, err := events.New(events.RegionSource, events.TypeMachineFailed, events.MachineStreamName(m.ID), w.cfg.Now(),
		events.MachineRef{MachineID: m.ID, Reason: reason})
	if err != nil {
		return false, err
	}
	err = w.store.InTx(ctx, func(tx pgx.Tx) error {
		_, err := w.store.EmitMachine(ctx, tx, m.ID, m.Version, ev)
		return err
	})
	var conflict *postgres.ConflictError
	if errors.As(err, &conflict) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	w.timedOut.Inc()
	w.log.Warn("deployment timed out", "machine_id", m.ID, "hostname", m.Hostname, "timeout", w.cfg.Timeout)
	return true, nil
}
