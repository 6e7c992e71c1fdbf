package images

import (
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
)

// Publisher takes the events the store emits; *eventbus.Publisher is one.
type Publisher interface {
	Publish(events.Event)
}

// Config configures a Store. Zero values of optional fields get the
// defaults named beside them.
type Config struct {
	// DataDir is the rack's data directory; the store lives in DataDir/images.
	DataDir string
	// RackID is the rack's id: the source and subject of the events.
	RackID string
	// Publisher receives the events (imported, removed, corrupt). Nil
	// means no events, for tools that only read the store.
	Publisher Publisher
	Logger    *slog.Logger
	// Now is the clock of GC windows and timestamps. Default time.Now.
	Now        func() time.Time
	Registerer prometheus.Registerer
	// HTTPClient fetches from HTTP(S) sources. Default: a client with its
	// own transport; the stall timeout applies on top of any client timeout.
	HTTPClient *http.Client
	// KeepNewest is how many of the newest versions of each
	// os/arch/subarch/release/label GC always keeps. Default 2.
	KeepNewest int
	// InFlightWindow is how long after a file of a version was handed out
	// the version counts as being booted from. Default 1h.
	InFlightWindow time.Duration
	// StallTimeout aborts a download when a source sends nothing for this
	// long (including before the response headers). Default 30s.
	StallTimeout time.Duration
	// ScrubAtOpen verifies every stored file's sha256 in Open.
	ScrubAtOpen bool
	// SystemRoot is where the system bootloader importer looks for the
	// Debian packages' files. Default "/".
	SystemRoot string
	// KeepImports is how many finished imports Imports() remembers.
	// Default 100.
	KeepImports int
	// OnChange is called, outside any lock, whenever the set of usable
	// versions changes, so the rack republishes its capability snapshot.
	OnChange func()
}

func (c *Config) validate() error {
	var errs []error
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		errs = append(errs, errors.New("DataDir must be an absolute path (the rack's data directory)"))
	}
	if c.Publisher != nil && c.RackID == "" {
		errs = append(errs, errors.New("RackID must be set when a Publisher is given (it is the events' source)"))
	}
	if c.KeepNewest < 0 {
		errs = append(errs, errors.New("KeepNewest must be 0 (default 2) or more"))
	}
	if c.InFlightWindow < 0 || c.StallTimeout < 0 || c.KeepImports < 0 {
		errs = append(errs, errors.New("InFlightWindow, StallTimeout and KeepImports must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.KeepNewest == 0 {
		c.KeepNewest = 2
	}
	if c.InFlightWindow == 0 {
		c.InFlightWindow = time.Hour
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.SystemRoot == "" {
		c.SystemRoot = "/"
	}
	if c.KeepImports == 0 {
		c.KeepImports = 100
	}
	return nil
}
