package power

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/flagenv"
)

// Publisher takes events for JetStream without blocking
// (*eventbus.Publisher in the rack process).
type Publisher interface {
	Publish(events.Event)
}

// Settings are what an operator sets of power (rackd's -power-* flags).
type Settings struct {
	// SearchPath lists the directories holding script drivers (one
	// directory per driver, named after it), in order of precedence.
	SearchPath []string
	// Timeout bounds each action, and the wait for a free slot before it.
	Timeout time.Duration
	// Concurrency is how many actions run at once.
	Concurrency int
	// StatePollInterval is how often the region is to poll the power
	// state of the machines this rack drives (0: never); reported in the
	// capability snapshot.
	StatePollInterval time.Duration
}

// DefaultSettings returns the defaults of the flags.
func DefaultSettings() Settings {
	return Settings{
		SearchPath:        []string{"/usr/share/rackplane/power", "/etc/rackplane/power"},
		Timeout:           30 * time.Second,
		Concurrency:       32,
		StatePollInterval: 5 * time.Minute,
	}
}

// RegisterFlags binds s to the -power-* flags of fs.
func (s *Settings) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("power-search-path", "comma-separated directories holding power script drivers, a directory per driver named after it (default "+strings.Join(s.SearchPath, ",")+")", flagenv.List(&s.SearchPath))
	fs.DurationVar(&s.Timeout, "power-timeout", s.Timeout, "how long a power action may take (a BMC, script or endpoint past it is given up, a script killed), and how long one may wait for a free slot")
	fs.IntVar(&s.Concurrency, "power-concurrency", s.Concurrency, "power actions run at once; more wait for a slot")
	fs.DurationVar(&s.StatePollInterval, "power-poll-interval", s.StatePollInterval, "how often the region polls the power state of the machines this rack drives, each machine jittered by up to a tenth either way (0: never)")
}

// Validate reports every problem of s at once, naming the flags. It
// changes nothing.
func (s Settings) Validate() error {
	var errs []error
	for _, d := range s.SearchPath {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("-power-search-path: %q is not an absolute path", d))
		}
	}
	if s.Timeout < 100*time.Millisecond || s.Timeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("-power-timeout %s: want 100ms to 10m", s.Timeout))
	}
	if s.Concurrency < 1 || s.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("-power-concurrency %d: want 1 to 4096", s.Concurrency))
	}
	if s.StatePollInterval != 0 && (s.StatePollInterval < time.Second || s.StatePollInterval > 24*time.Hour || s.StatePollInterval%time.Second != 0) {
		errs = append(errs, fmt.Errorf("-power-poll-interval %s: want 0 (never) or whole seconds from 1s to 24h, such as 5m", s.StatePollInterval))
	}
	return errors.Join(errs...)
}

// Config configures a Manager. DefaultConfig has the defaults; the rack
// sets RackID, Events and the rest it knows.
type Config struct {
	Settings
	// RackID is the rack's UUID: the source of every event.
	RackID string
	// PollInterval is how often Run looks for script drivers added,
	// changed or removed.
	PollInterval time.Duration
	// IPMITool is the ipmitool binary (empty: looked up in
	// scriptrun.SafePath).
	IPMITool string
	// Events receives every event; required.
	Events Publisher
	// OnChange is called with the new driver list whenever it changes,
	// so that the rack can republish its capability snapshot.
	OnChange func([]events.PowerDriver)

	// Logger, Now and Registerer may be nil: slog.Default(), time.Now,
	// and no metrics.
	Logger     *slog.Logger
	Now        func() time.Time
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Settings: DefaultSettings(), PollInterval: 10 * time.Second}
}

// Validate reports every problem of c at once. It changes nothing.
func (c Config) Validate() error {
	errs := []error{c.Settings.Validate()}
	if !uuidRE.MatchString(c.RackID) {
		errs = append(errs, errors.New("power: RackID must be the rack's lower-case UUID"))
	}
	if c.PollInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("power: poll interval %s: want at least 10ms", c.PollInterval))
	}
	if c.IPMITool != "" && !filepath.IsAbs(c.IPMITool) {
		errs = append(errs, fmt.Errorf("power: ipmitool %q is not an absolute path", c.IPMITool))
	}
	if c.Events == nil {
		errs = append(errs, errors.New("power: Events must be set (the rack's event publisher)"))
	}
	return errors.Join(errs...)
}
