package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
)

// LifecycleConfig configures a Lifecycle. A zero duration or concurrency
// is its default (DefaultLifecycleConfig); Retries zero means none.
type LifecycleConfig struct {
	// Tick is how often due work is looked for.
	Tick time.Duration
	// Retries is how many times a failed attempt is tried again before
	// the machine fails; an outcome that another try cannot change (the
	// BMC refused the credentials, the driver does not support the
	// action, the parameters do not suit it) fails it at once.
	Retries int
	// RetryDelay is the wait before the first retry; it doubles with each
	// one, with a jitter of a fifth either way.
	RetryDelay time.Duration
	// ActionTimeout bounds each request to the rack.
	ActionTimeout time.Duration
	// Concurrency is how many machines' power work runs at once.
	Concurrency int
	// Wake, when set, tells of appended events (any region's): work is
	// looked for then too, at most every MinGap, so a deploy powers the
	// machine without waiting for the tick.
	Wake interface{ Next() <-chan struct{} }
	// MinGap is the least time between two looks for work.
	MinGap     time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultLifecycleConfig returns the defaults.
func DefaultLifecycleConfig() LifecycleConfig {
	return LifecycleConfig{Tick: time.Second, Retries: 3, RetryDelay: 10 * time.Second, ActionTimeout: 75 * time.Second, Concurrency: 16, MinGap: 200 * time.Millisecond}
}

// Tasks is the region's bookkeeping of power work (postgres).
type Tasks interface {
	SyncPowerTasks(ctx context.Context) error
	LeasePowerTasks(ctx context.Context, lease time.Duration, limit int) ([]postgres.PowerTask, error)
	StillPowerTask(ctx context.Context, t postgres.PowerTask) error
	MarkPowerIssued(ctx context.Context, t postgres.PowerTask) error
	FinishPowerTask(ctx context.Context, t postgres.PowerTask, done bool, attempts int, delay time.Duration, lastError string) error
	HasPowerParameters(ctx context.Context, id string) (bool, error)
}

// Machines is the machine lifecycle, which decides what an outcome does
// to the machine.
type Machines interface {
	ReleaseFinished(ctx context.Context, id string, success bool, message string, meta machine.Meta) (machine.Result, error)
	PowerFailed(ctx context.Context, id, deploymentID, reason string, meta machine.Meta) (machine.Result, error)
}

// Lifecycle powers machines for their lifecycle: a deploying machine with
// power parameters is set to boot from the network and powered on (cycled
// when it is on), once per deployment, and so is a machine erasing its
// disks for a release, once per erase; a releasing machine is switched
// off, and is ready only then. A failed attempt is retried as configured;
// the last failure fails the machine with the reason.
//
// The work is kept in PostgreSQL (postgres.PowerTask), so a region that
// restarts carries on, and leased, so two regions never power the same
// machine at once. An attempt checks before each request to the BMC that
// the task is still its own (an operator's release or redeploy ends it),
// and records before it sends the power on that it did: an attempt whose
// outcome was lost (the region stopped, the rack's answer never came) is
// followed by one that only checks the power and switches it on, never
// one that cycles the installer it started.
type Lifecycle struct {
	svc      *Service
	tasks    Tasks
	machines Machines
	cfg      LifecycleConfig
	log      *slog.Logger
	outcomes *prometheus.CounterVec
}

// Lifecycle outcomes, the label of rackplane_region_power_lifecycle_total.
const (
	lifecycleDone   = "done"
	lifecycleRetry  = "retry"
	lifecycleFailed = "failed"
)

// NewLifecycle returns a lifecycle; it does nothing until Run.
func NewLifecycle(svc *Service, tasks Tasks, machines Machines, cfg LifecycleConfig) (*Lifecycle, error) {
	def := DefaultLifecycleConfig()
	if cfg.Tick <= 0 {
		cfg.Tick = def.Tick
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = def.RetryDelay
	}
	if cfg.ActionTimeout <= 0 {
		cfg.ActionTimeout = def.ActionTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = def.Concurrency
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = def.MinGap
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Lifecycle{svc: svc, tasks: tasks, machines: machines, cfg: cfg, log: cfg.Logger,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_power_lifecycle_total",
			Help: "Attempts of the lifecycle's power work (kind deploy: set boot PXE and power on; release: power off), by how they ended: done, retry (failed, tried again later), failed (the machine failed).",
		}, []string{"kind", "outcome"}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(l.outcomes); err != nil {
			return nil, fmt.Errorf("power lifecycle metrics: %w", err)
		}
	}
	return l, nil
}

// lease is how long an attempt may hold its task: the requests of a
// deploy (at most four), each to its timeout, and a margin.
func (l *Lifecycle) lease() time.Duration { return 4*l.cfg.ActionTimeout + time.Minute }

// Run does the due work every Tick (or Wake) until ctx ends, and returns
// when the attempts it started have ended. A database error is logged and
// tried again: the lifecycle is never why the region stops.
func (l *Lifecycle) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, l.cfg.Concurrency)
	t := time.NewTicker(l.cfg.Tick)
	defer t.Stop()
	for {
		if err := l.tasks.SyncPowerTasks(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("power lifecycle", "err", err)
		}
		free := cap(slots) - len(slots)
		var due []postgres.PowerTask
		if free > 0 {
			var err error
			if due, err = l.tasks.LeasePowerTasks(ctx, l.lease(), free); err != nil && ctx.Err() == nil {
				l.log.Warn("power lifecycle", "err", err)
			}
		}
		for _, task := range due {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-slots; wg.Done() }()
				l.attempt(ctx, task)
			}()
		}
		var appended <-chan struct{}
		if l.cfg.Wake != nil {
			appended = l.cfg.Wake.Next()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-appended:
		}
		// A burst of appended events makes one look, not one each.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(l.cfg.MinGap):
		}
	}
}

// attempt runs one attempt of a task and records how it ended.
func (l *Lifecycle) attempt(ctx context.Context, task postgres.PowerTask) {
	meta := Meta{Actor: "system:power-lifecycle"}
	var err error
	var permanent bool
	switch task.Kind {
	case postgres.PowerTaskDeploy:
		permanent, err = l.powerOn(ctx, task, meta)
	case postgres.PowerTaskRelease:
		permanent, err = l.powerOff(ctx, task, meta)
	default:
		err, permanent = fmt.Errorf("unknown power task kind %q", task.Kind), true
	}
	// The bookkeeping outlives a stopping region: the task is handed
	// back at once rather than when its lease runs out.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	attempts := task.Attempts + 1
	log := l.log.With("machine_id", task.MachineID, "kind", task.Kind, "attempt", attempts)
	switch {
	case errors.Is(err, postgres.ErrLeaseLost):
		log.Info("power lifecycle attempt stopped: the machine moved on")
		l.finish(bctx, task, false, task.Attempts, 0, "")
		return
	case ctx.Err() != nil:
		// The region is stopping: what the attempt did is not known; the
		// next one, here or in another region, finds out (Issued).
		l.finish(bctx, task, false, task.Attempts, 0, "the region stopped during the attempt")
		return
	}
	mmeta := machine.Meta{Actor: meta.Actor}
	if err == nil {
		if task.Kind == postgres.PowerTaskRelease {
			if _, err := l.machines.ReleaseFinished(bctx, task.MachineID, true, "", mmeta); err != nil {
				// The machine is off; another attempt finds it so and
				// finishes the release.
				log.Warn("power lifecycle: finish release", "err", err)
				l.finish(bctx, task, false, task.Attempts, l.cfg.Tick, err.Error())
				return
			}
		}
		l.outcomes.WithLabelValues(task.Kind, lifecycleDone).Inc()
		log.Info("power lifecycle done")
		l.finish(bctx, task, true, attempts, 0, "")
		return
	}
	msg := err.Error()
	if !permanent && attempts <= l.cfg.Retries {
		delay := l.cfg.RetryDelay << (attempts - 1)
		delay += time.Duration((rand.Float64()*0.4 - 0.2) * float64(delay))
		l.outcomes.WithLabelValues(task.Kind, lifecycleRetry).Inc()
		log.Warn("power lifecycle attempt failed; trying again", "retry_in", delay.Round(time.Millisecond), "err", msg)
		l.finish(bctx, task, false, attempts, delay, msg)
		return
	}
	reason := fmt.Sprintf("%s after %d attempt%s: %s", what(task), attempts, plural(attempts), msg)
	if permanent {
		reason = fmt.Sprintf("%s: %s", what(task), msg)
	}
	var ferr error
	if task.Kind == postgres.PowerTaskDeploy {
		_, ferr = l.machines.PowerFailed(bctx, task.MachineID, task.Operation, reason, mmeta)
	} else {
		_, ferr = l.machines.ReleaseFinished(bctx, task.MachineID, false, reason, mmeta)
	}
	if ferr != nil && !errors.Is(ferr, machine.ErrMovedOn) {
		log.Warn("power lifecycle: fail the machine", "err", ferr)
		l.finish(bctx, task, false, task.Attempts, l.cfg.Tick, msg)
		return
	}
	l.outcomes.WithLabelValues(task.Kind, lifecycleFailed).Inc()
	log.Warn("power lifecycle failed; the machine failed", "reason", reason)
	l.finish(bctx, task, true, attempts, 0, msg)
}

func (l *Lifecycle) finish(ctx context.Context, task postgres.PowerTask, done bool, attempts int, delay time.Duration, msg string) {
	err := l.tasks.FinishPowerTask(ctx, task, done, attempts, delay, msg)
	if err != nil && !errors.Is(err, postgres.ErrLeaseLost) {
		l.log.Warn("power lifecycle: record attempt", "machine_id", task.MachineID, "err", err)
	}
}

func what(task postgres.PowerTask) string {
	if task.Kind == postgres.PowerTaskDeploy && task.Status == events.MachineErasing {
		// The lifecycle puts "erasing the disks failed" before it.
		return "powering the machine on into the ephemeral environment failed"
	}
	if task.Kind == postgres.PowerTaskDeploy {
		return "powering the machine on into its deployment failed"
	}
	return "switching the machine off failed"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// permanentOutcomes are the rack's outcomes another attempt cannot
// change: the operator must fix the parameters or the rack first.
var permanentOutcomes = []string{events.PowerOutcomeAuthFailed, events.PowerOutcomeUnsupported, events.PowerOutcomeInvalid}

func permanentFailure(res Result) bool { return slices.Contains(permanentOutcomes, res.Outcome) }

// powerOn sets the next boot to the network, where the driver can, and
// powers the machine on: a cycle when it is on already (it must reboot
// into its installer), else on. After an attempt whose power on was sent
// but whose outcome was lost (task.Issued), it only switches on a machine
// that is off. A machine whose parameters were cleared meanwhile has
// nothing to power.
func (l *Lifecycle) powerOn(ctx context.Context, task postgres.PowerTask, meta Meta) (permanent bool, err error) {
	id, to := task.MachineID, l.cfg.ActionTimeout
	if has, err := l.tasks.HasPowerParameters(ctx, id); err != nil || !has {
		return false, err
	}
	if !task.Issued {
		res, err := l.svc.SetBoot(ctx, id, events.BootDevicePXE, to, meta)
		switch {
		case errors.Is(err, ErrNotOffered), res.Outcome == events.PowerOutcomeUnsupported:
			// A driver without boot device control relies on the
			// machine's boot order putting the network first, as MAAS
			// does.
		case err != nil:
			return permanentFailure(res), err
		}
		if err := l.tasks.StillPowerTask(ctx, task); err != nil {
			return false, err
		}
	}
	st, err := l.svc.Act(ctx, id, events.PowerStatus, to, meta)
	if err != nil {
		return permanentFailure(st), err
	}
	action := events.PowerOn
	switch {
	case st.State == events.PowerStateOn && task.Issued:
		return false, nil // the lost attempt's power on took
	case st.State == events.PowerStateOn:
		action = events.PowerCycle
	}
	if err := l.tasks.StillPowerTask(ctx, task); err != nil {
		return false, err
	}
	if err := l.tasks.MarkPowerIssued(ctx, task); err != nil {
		return false, err
	}
	res, err := l.svc.Act(ctx, id, action, to, meta)
	if action == events.PowerCycle && errors.Is(err, ErrNotOffered) {
		if res, err = l.svc.Act(ctx, id, events.PowerOff, to, meta); err == nil {
			res, err = l.svc.Act(ctx, id, events.PowerOn, to, meta)
		}
	}
	return permanentFailure(res), err
}

// powerOff switches a releasing machine off; one without power parameters
// (cleared while it was releasing) has nothing to switch.
func (l *Lifecycle) powerOff(ctx context.Context, task postgres.PowerTask, meta Meta) (permanent bool, err error) {
	if has, err := l.tasks.HasPowerParameters(ctx, task.MachineID); err != nil || !has {
		return false, err
	}
	if err := l.tasks.StillPowerTask(ctx, task); err != nil {
		return false, err
	}
	res, err := l.svc.Act(ctx, task.MachineID, events.PowerOff, l.cfg.ActionTimeout, meta)
	return permanentFailure(res), err
}
