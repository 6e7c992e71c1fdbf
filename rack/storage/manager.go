package storage

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// Publisher takes events for JetStream without blocking
// (*eventbus.Publisher in the rack process).
type Publisher interface {
	Publish(events.Event)
}

// Config configures a Manager.
type Config struct {
	// RackID is the rack's UUID: the source of every event.
	RackID string
	// SearchPath lists the directories holding provider directories, in
	// order of precedence (Ganeti's ES_SEARCH_PATH).
	SearchPath []string
	// DataDir is the rack's data directory; records and volume logs go
	// under DataDir/storage.
	DataDir string
	// ActionTimeout bounds every action (default 5 minutes); Timeouts
	// overrides it for single actions.
	ActionTimeout time.Duration
	Timeouts      map[Action]time.Duration
	// PollInterval is how often Run looks for changes in the search path
	// (default 10s).
	PollInterval time.Duration
	// LogMaxBytes bounds each volume's log (default 1 MiB, minimum 4 KiB).
	LogMaxBytes int64
	// Events receives every event; required.
	Events Publisher
	// OnChange is called with the new provider list whenever it changes,
	// so the rack can republish its capability snapshot.
	OnChange func([]Provider)

	Logger     *slog.Logger
	Now        func() time.Time
	Registerer prometheus.Registerer
}

func (c *Config) validate() error {
	var probs []string
	if !isUUID(c.RackID) {
		probs = append(probs, "RackID must be the rack's lower-case UUID")
	}
	if len(c.SearchPath) == 0 {
		probs = append(probs, "SearchPath must list at least one directory")
	}
	for _, d := range c.SearchPath {
		if !filepath.IsAbs(d) {
			probs = append(probs, fmt.Sprintf("SearchPath entry %q must be an absolute path", d))
		}
	}
	if !filepath.IsAbs(c.DataDir) {
		probs = append(probs, "DataDir must be an absolute path")
	}
	if c.Events == nil {
		probs = append(probs, "Events must be set (the rack's event publisher)")
	}
	if c.ActionTimeout < 0 || c.PollInterval < 0 || c.LogMaxBytes < 0 {
		probs = append(probs, "ActionTimeout, PollInterval and LogMaxBytes must not be negative")
	}
	for a, d := range c.Timeouts {
		if _, ok := ParseAction(string(a)); !ok || d <= 0 {
			probs = append(probs, fmt.Sprintf("Timeouts[%q] must name a known action and be positive", a))
		}
	}
	if c.LogMaxBytes > 0 && c.LogMaxBytes < 4<<10 {
		probs = append(probs, "LogMaxBytes must be at least 4096")
	}
	if len(probs) > 0 {
		return rackplane.Errorf(rackplane.EINVALID, "storage config: %s", strings.Join(probs, "; "))
	}
	if c.ActionTimeout == 0 {
		c.ActionTimeout = 5 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 10 * time.Second
	}
	if c.LogMaxBytes == 0 {
		c.LogMaxBytes = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// RunMarker is the variable every provider script gets beside its
// environment, with a value of its own run (scriptrun.Spec.Marker): what
// a script starts can be found and killed by it.
const RunMarker = "RACKPLANE_STORAGE_RUN"

// Manager runs a rack's storage providers.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	records records
	logDir  string

	mu        sync.Mutex
	providers []Provider
	busy      map[string]bool // volume ids with an action running
	stopping  bool            // Run is waiting for the actions under way: no new one starts

	running sync.WaitGroup

	actions  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	valid    prometheus.GaugeFunc
}

// New checks cfg, creates the data directories, scans the search path,
// and settles records of actions a previous run did not finish.
func New(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base := filepath.Join(cfg.DataDir, "storage")
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger,
		records: records{dir: filepath.Join(base, "volumes")},
		logDir:  filepath.Join(base, "logs"),
		busy:    map[string]bool{},
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_storage_actions_total", Help: "Storage provider actions run, by action and result.",
		}, []string{"action", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rackplane_storage_action_duration_seconds", Help: "Time storage provider scripts took.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}, []string{"action"}),
	}
	m.valid = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "rackplane_storage_providers_valid", Help: "Storage providers found valid in the search path.",
	}, func() float64 {
		n := 0
		for _, p := range m.Providers() {
			if p.Valid {
				n++
			}
		}
		return float64(n)
	})
	if cfg.Registerer != nil {
		if err := registerAll(cfg.Registerer, m.actions, m.duration, m.valid); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{m.records.dir, m.logDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("create storage data directory: %w", err)
		}
	}
	if err := m.settleInterrupted(); err != nil {
		return nil, err
	}
	m.scan()
	return m, nil
}

func registerAll(r prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("register storage metrics: %w", err)
		}
	}
	return nil
}

// settleInterrupted marks records whose action never finished (the rack
// stopped while a script ran): what the script did is unknown, and the
// record says so until the next action.
func (m *Manager) settleInterrupted() error {
	recs, bad, err := m.records.all()
	if err != nil {
		return err
	}
	for _, err := range bad {
		m.log.Error("volume record unreadable", "err", err)
	}
	for _, rec := range recs {
		if rec.Pending == "" {
			continue
		}
		m.log.Warn("storage action was interrupted", "volume_id", rec.VolumeID, "action", rec.Pending, "provider", rec.Provider)
		rec.LastAction, rec.LastOK = rec.Pending, false
		rec.LastError = fmt.Sprintf("%s was interrupted: the rack stopped while it ran", rec.Pending)
		rec.Pending = ""
		rec.State = events.VolumeStateUnknown
		rec.UpdatedAt = m.cfg.Now().UTC()
		if err := m.records.save(rec); err != nil {
			return err
		}
	}
	return nil
}

// Providers returns the providers found at the last scan, valid or not,
// for the capability snapshot.
func (m *Manager) Providers() []Provider {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.providers)
}

// scan reads the search path and reports whether the list changed.
func (m *Manager) scan() bool {
	ps, errs := ScanProviders(m.cfg.SearchPath)
	for _, err := range errs {
		m.log.Warn("storage provider search path", "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if reflect.DeepEqual(ps, m.providers) {
		return false
	}
	m.providers = ps
	return true
}

// Rescan reads the search path now; when the provider list changed it
// calls OnChange and publishes storage_providers_changed. It reports
// whether the list changed.
func (m *Manager) Rescan() bool {
	if !m.scan() {
		return false
	}
	ps := m.Providers()
	for _, p := range ps {
		if !p.Valid {
			m.log.Warn("storage provider is not usable", "provider", p.Name, "path", p.Path, "reason", p.Reason)
		}
	}
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(ps)
	}
	m.publishProviders(ps)
	return true
}

func (m *Manager) publishProviders(ps []Provider) {
	if ps == nil {
		ps = []Provider{} // the schema wants a list, even an empty one
	}
	m.publish(events.TypeStorageProvidersChanged, events.RackStreamName(m.cfg.RackID), events.StorageProvidersChanged{Providers: ps})
}

func (m *Manager) publish(typ, subject string, data any) {
	ev, err := events.New(events.RackSource(m.cfg.RackID), typ, subject, m.cfg.Now(), data)
	if err != nil {
		m.log.Error("build storage event", "type", typ, "err", err)
		return
	}
	m.cfg.Events.Publish(ev)
}

// Run publishes the provider list once, then watches the search path
// until ctx ends, and waits for actions still running.
func (m *Manager) Run(ctx context.Context) error {
	m.publishProviders(m.Providers())
	t := time.NewTicker(m.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.stopping = true
			m.mu.Unlock()
			m.running.Wait()
			return nil
		case <-t.C:
			m.Rescan()
		}
	}
}

// Record returns the rack's record of a volume.
func (m *Manager) Record(volumeID string) (Record, bool, error) {
	if !isUUID(volumeID) {
		return Record{}, false, rackplane.Errorf(rackplane.EINVALID, "volume_id %.80q is not a lower-case UUID", volumeID)
	}
	return m.records.load(volumeID)
}

// provider returns the named provider as it is on disk now: the list may
// be up to one poll old, and a script may have gone since. The first entry
// of a name is the one that wins in the search path; later ones are
// shadowed.
func (m *Manager) provider(name string) (Provider, error) {
	m.mu.Lock()
	i := slices.IndexFunc(m.providers, func(p Provider) bool { return p.Name == name })
	var p Provider
	if i >= 0 {
		p = m.providers[i]
	}
	m.mu.Unlock()
	if i < 0 {
		return Provider{}, rackplane.Errorf(rackplane.ENOTFOUND, "no storage provider %q on this rack", name)
	}
	p = LoadProvider(p.Name, p.Path)
	if !p.Valid {
		return Provider{}, rackplane.Errorf(rackplane.EPRECONDITION, "storage provider %s is not usable: %s", name, p.Reason)
	}
	return p, nil
}

func (m *Manager) timeout(a Action) time.Duration {
	if d, ok := m.cfg.Timeouts[a]; ok {
		return d
	}
	return m.cfg.ActionTimeout
}

func (m *Manager) lock(volumeID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy[volumeID] {
		return false
	}
	m.busy[volumeID] = true
	return true
}

func (m *Manager) unlock(volumeID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.busy, volumeID)
}

// environment builds a script's whole environment.
func environment(a Action, rec Record, req Request, p Provider, newSize int64) []string {
	env := []string{
		"PATH=" + scriptrun.SafePath,
		"VOL_NAME=" + rec.Name,
		"VOL_UUID=" + rec.VolumeID,
		"VOL_METADATA=" + metadata(rec.Machine),
	}
	if (a == ActionCreate || a == ActionGrow) && rec.SizeMiB > 0 {
		env = append(env, fmt.Sprintf("VOL_SIZE=%d", rec.SizeMiB))
	}
	switch a {
	case ActionGrow:
		env = append(env, fmt.Sprintf("VOL_NEW_SIZE=%d", newSize))
	case ActionSnapshot:
		env = append(env, "VOL_SNAPSHOT_NAME="+req.SnapshotName, fmt.Sprintf("VOL_SNAPSHOT_SIZE=%d", rec.SizeMiB))
	case ActionOpen:
		env = append(env, fmt.Sprintf("VOL_OPEN_EXCLUSIVE=%t", req.Exclusive))
	}
	for _, q := range p.Parameters {
		if v, ok := rec.Parameters[q.Name]; ok {
			env = append(env, "EXTP_"+strings.ToUpper(q.Name)+"="+v)
		}
	}
	sort.Strings(env[4:])
	return env
}
