package power

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
)

// Publisher takes events for JetStream without blocking
// (*eventbus.Publisher in the rack process).
type Publisher interface {
	Publish(events.Event)
}

// Config configures a Manager. DefaultConfig has the defaults; the rack
// sets RackID, Events and the rest it knows.
type Config struct {
	// RackID is the rack's UUID: the source of every event.
	RackID string
	// SearchPath lists the directories holding script drivers (one
	// directory per driver, named after it), in order of precedence.
	SearchPath []string
	// Timeout bounds each action, and the wait for a free slot before it.
	Timeout time.Duration
	// Concurrency is how many actions run at once.
	Concurrency int
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
	return Config{
		SearchPath:   []string{"/usr/share/rackplane/power", "/etc/rackplane/power"},
		Timeout:      30 * time.Second,
		Concurrency:  32,
		PollInterval: 10 * time.Second,
	}
}

// Validate reports every problem of c at once. It changes nothing.
func (c Config) Validate() error {
	var errs []error
	if !uuidRE.MatchString(c.RackID) {
		errs = append(errs, errors.New("power: RackID must be the rack's lower-case UUID"))
	}
	for _, d := range c.SearchPath {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("power: search path entry %q is not an absolute path", d))
		}
	}
	if c.Timeout < 100*time.Millisecond || c.Timeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("power: timeout %s: want 100ms to 10m", c.Timeout))
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, fmt.Errorf("power: concurrency %d: want 1 to 4096", c.Concurrency))
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
