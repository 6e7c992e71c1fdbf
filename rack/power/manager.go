package power

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// maxError bounds the error text of a reply and an event.
const maxError = 8192

// Manager runs a rack's power actions.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	builtin map[string]driver

	slots    chan struct{} // one per action running
	machines keyedLocks    // one action at a time per machine

	mu      sync.Mutex
	scripts []scriptDriver // as the last scan found them

	// running counts the actions under way. Once Run has seen its
	// context end, stopping refuses new ones, so that no Add races the
	// Wait that lets Run return (an rpc can arrive while the rack stops).
	runMu    sync.Mutex
	stopping bool
	running  sync.WaitGroup

	actions  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.GaugeFunc
}

// New checks cfg and finds the drivers.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Now,
		slots:    make(chan struct{}, cfg.Concurrency),
		machines: keyedLocks{m: map[string]*keyedLock{}},
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_power_actions_total", Help: "Power actions run, by driver, action and outcome.",
		}, []string{"driver", "action", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_power_action_duration_seconds", Help: "Time power actions took, the wait for a slot included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 9),
		}, []string{"driver", "action"}),
	}
	m.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_power_actions_running", Help: "Power actions running now.",
	}, func() float64 { return float64(len(m.slots)) })
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.now == nil {
		m.now = time.Now
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{m.actions, m.duration, m.inFlight} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register power metrics: %w", err)
			}
		}
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	m.builtin = map[string]driver{
		DriverIPMI:    newIPMI(cfg.IPMITool),
		DriverQEMU:    qemuDriver{},
		DriverWebhook: webhookDriver{client: client},
	}
	m.rescan(false)
	return m, nil
}

// Drivers returns every driver, usable or not, for the capability
// snapshot: the built-in ones, then the script drivers by name.
func (m *Manager) Drivers() []events.PowerDriver {
	out := []events.PowerDriver{}
	for _, name := range []string{DriverIPMI, DriverQEMU, DriverWebhook} {
		out = append(out, m.builtin[name].describe())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.scripts {
		out = append(out, s.describe())
	}
	return out
}

// Rescan reads the search path now; when the script drivers changed
// (added, removed, scripts made usable or not) it calls OnChange, and it
// reports whether they did.
func (m *Manager) Rescan() bool { return m.rescan(true) }

// rescan is Rescan, calling OnChange only when notify is set (not for
// the first scan, in New).
func (m *Manager) rescan(notify bool) bool {
	found, problems := scanScripts(m.cfg.SearchPath, func(name string) bool { return m.builtin[name] != nil })
	for _, p := range problems {
		m.log.Warn("power driver search path", "err", p)
	}
	m.mu.Lock()
	same := reflect.DeepEqual(found, m.scripts)
	m.scripts = found
	m.mu.Unlock()
	if same {
		return false
	}
	ds := m.Drivers()
	for _, d := range ds {
		if d.Kind == events.PowerDriverScript && !d.Available {
			m.log.Warn("power driver is not usable", "driver", d.Name, "reason", d.Detail)
		}
	}
	if notify && m.cfg.OnChange != nil {
		m.cfg.OnChange(ds)
	}
	return true
}

// Run watches the search path until ctx ends, then waits for the actions
// still running.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.runMu.Lock()
			m.stopping = true
			m.runMu.Unlock()
			m.running.Wait()
			return nil
		case <-t.C:
			m.Rescan()
		}
	}
}

// driver returns the named driver as it is now: a built-in one, or a
// script driver read again from disk (the list may be a poll old).
func (m *Manager) driver(name string) (driver, error) {
	if d, ok := m.builtin[name]; ok {
		return d, nil
	}
	m.mu.Lock()
	i := slices.IndexFunc(m.scripts, func(s scriptDriver) bool { return s.name == name })
	var s scriptDriver
	if i >= 0 {
		s = m.scripts[i]
	}
	m.mu.Unlock()
	if i < 0 {
		return nil, fail(events.PowerOutcomeUnsupported, "this rack has no power driver %q", name)
	}
	return loadScript(name, s.dir), nil
}

// Do runs one power action and returns its reply; a failure is in the
// reply (ok false, the outcome and why), never an error. Every request
// with a valid machine id is also published as a power_action_completed
// event. The action runs to its own timeout even if ctx ends first (a
// power action cut short leaves the machine in a state nobody knows), but
// a wait for a slot ends with ctx.
func (m *Manager) Do(ctx context.Context, req Request) Reply {
	start := m.now()
	m.runMu.Lock()
	if m.stopping {
		m.runMu.Unlock()
		reply := Reply{MachineID: req.MachineID, Action: req.Action, State: events.PowerStateUnknown, Outcome: events.PowerOutcomeBusy,
			Error: "the rack is stopping: nothing ran; ask again once it is back"}
		if _, known := events.ParsePowerAction(string(req.Action)); !known {
			reply.Action = ""
		}
		return reply
	}
	m.running.Add(1)
	m.runMu.Unlock()
	defer m.running.Done()
	state, err := m.do(ctx, req)
	if err != nil {
		state = events.PowerStateUnknown
	}
	elapsed := max(m.now().Sub(start), 0)
	msg := scrub(errorText(err), req.Parameters)
	outcome := outcomeOf(err)
	reply := Reply{MachineID: req.MachineID, Action: req.Action, State: state, OK: err == nil, Outcome: outcome,
		Error: msg, DurationMS: elapsed.Milliseconds()}
	if _, known := events.ParsePowerAction(string(req.Action)); !known {
		reply.Action = "" // the schema allows no other; checkRequest said why
	}
	attrs := []any{"machine_id", req.MachineID, "driver", req.Driver, "action", req.Action,
		"outcome", outcome, "state", state, "duration_ms", reply.DurationMS}
	if err != nil {
		m.log.Warn("power action failed", append(attrs, "err", msg)...)
	} else {
		m.log.Debug("power action done", attrs...)
	}
	if machineRE.MatchString(req.MachineID) && driverRE.MatchString(req.Driver) && reply.Action != "" {
		m.actions.WithLabelValues(req.Driver, string(req.Action), outcome).Inc()
		m.duration.WithLabelValues(req.Driver, string(req.Action)).Observe(elapsed.Seconds())
		// A poll is answered, not published: the region records what
		// changed (see events.PowerRequest.Poll).
		if !(req.Poll && req.Action == events.PowerStatus) {
			m.publish(req, reply, start)
		}
	}
	return reply
}

func (m *Manager) do(ctx context.Context, req Request) (string, error) {
	if err := checkRequest(req); err != nil {
		return "", err
	}
	d, err := m.driver(req.Driver)
	if err != nil {
		return "", err
	}
	desc := d.describe()
	if !desc.Available {
		return "", fail(events.PowerOutcomeUnsupported, "power driver %s is not usable on this rack: %s", req.Driver, desc.Detail)
	}
	if !offers(desc, req.Action) {
		return "", fail(events.PowerOutcomeUnsupported, "power driver %s does not offer %s", req.Driver, req.Action)
	}
	if err := d.check(req); err != nil {
		return "", err
	}
	// Waiting for the machine and for a slot counts against the
	// timeout: a caller gets an answer within twice that.
	wctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	unlock, err := m.machines.lock(wctx, req.MachineID)
	if err != nil {
		return "", fail(events.PowerOutcomeBusy, "another power action on machine %s ran past %s", req.MachineID, m.cfg.Timeout)
	}
	defer unlock()
	select {
	case m.slots <- struct{}{}:
	case <-wctx.Done():
		return "", fail(events.PowerOutcomeBusy, "all %d power slots of the rack stayed taken for %s", m.cfg.Concurrency, m.cfg.Timeout)
	}
	defer func() { <-m.slots }()
	actx, cancelRun := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
	defer cancelRun()
	state, err := safeRun(actx, d, req)
	if err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = fail(events.PowerOutcomeTimeout, "%s %s did not finish within %s: %v", req.Driver, req.Action, m.cfg.Timeout, err)
	}
	return state, err
}

// safeRun keeps a driver's bug from taking the rack down.
func safeRun(ctx context.Context, d driver, req Request) (state string, err error) {
	defer func() {
		if r := recover(); r != nil {
			state, err = "", fmt.Errorf("power driver %s panicked: %v", req.Driver, r)
		}
	}()
	return d.run(ctx, req)
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// scrub masks the password in s and bounds its length: error texts reach
// replies, events and logs, and a driver's output or a rendered URL may
// hold the password.
func scrub(s string, p events.PowerParameters) string {
	if p.Password != "" {
		// The password as written, and as a URL, a quoted string or JSON
		// would carry it: a webhook's error quotes its URL and body.
		q := strconv.Quote(p.Password)
		j, _ := json.Marshal(p.Password)
		for _, form := range []string{p.Password, url.QueryEscape(p.Password), url.PathEscape(p.Password),
			q[1 : len(q)-1], string(j[1 : len(j)-1])} {
			if form != "" {
				s = strings.ReplaceAll(s, form, scriptrun.Mask)
			}
		}
	}
	if len(s) > maxError {
		s = strings.ToValidUTF8(s[:maxError], "")
	}
	return s
}

func (m *Manager) publish(req Request, reply Reply, start time.Time) {
	data := events.PowerActionCompleted{MachineID: req.MachineID, Driver: req.Driver, Action: req.Action,
		BootDevice: req.BootDevice, State: reply.State, OK: reply.OK, Outcome: reply.Outcome, Error: reply.Error,
		StartedAt: start.UTC(), DurationMS: reply.DurationMS}
	if req.Action != events.PowerSetBoot {
		data.BootDevice = ""
	}
	ev, err := events.New(events.RackSource(m.cfg.RackID), events.TypePowerActionCompleted, events.MachineStreamName(req.MachineID), m.now(), data)
	if err != nil {
		m.log.Error("build power event", "machine_id", req.MachineID, "err", err)
		return
	}
	m.cfg.Events.Publish(ev)
}

// keyedLocks serialises work per key; the lock of a key exists while
// somebody holds or waits for it.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	ch    chan struct{}
	users int
}

// lock takes key's lock, or fails when ctx ends first.
func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	l := k.m[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
