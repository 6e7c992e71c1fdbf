package daemon

import (
	"context"
	"errors"
	"flag"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
)

// part is one owner's share of a binary's settings.
type part interface {
	RegisterFlags(fs *flag.FlagSet)
	Validate() error
}

func registerFlags(fs *flag.FlagSet, parts ...part) {
	for _, p := range parts {
		p.RegisterFlags(fs)
	}
}

// validate reports every problem of every part at once.
func validate(parts ...part) error {
	errs := make([]error, len(parts))
	for i, p := range parts {
		errs[i] = p.Validate()
	}
	return errors.Join(errs...)
}

// RegionConfig is all of regiond's settings.
type RegionConfig struct {
	Region   region.Config
	NATS     dial.NATSConfig
	Postgres dial.PostgresConfig
	Log      logging.Config
}

// DefaultRegionConfig returns the defaults of every part.
func DefaultRegionConfig() RegionConfig {
	return RegionConfig{Region: region.DefaultConfig(), NATS: dial.DefaultNATSConfig(), Log: logging.DefaultConfig()}
}

func (c *RegionConfig) parts() []part { return []part{&c.Region, &c.NATS, &c.Postgres, &c.Log} }

// RegisterFlags binds every part's fields to flags of fs.
func (c *RegionConfig) RegisterFlags(fs *flag.FlagSet) { registerFlags(fs, c.parts()...) }

// Validate reports every problem of every part at once.
func (c RegionConfig) Validate() error { return validate(c.parts()...) }

// RackConfig is all of rackd's settings.
type RackConfig struct {
	Rack rack.Config
	NATS dial.NATSConfig
	Log  logging.Config
}

// DefaultRackConfig returns the defaults of every part.
func DefaultRackConfig() RackConfig {
	return RackConfig{Rack: rack.DefaultConfig(), NATS: dial.DefaultNATSConfig(), Log: logging.DefaultConfig()}
}

func (c *RackConfig) parts() []part { return []part{&c.Rack, &c.NATS, &c.Log} }

// RegisterFlags binds every part's fields to flags of fs.
func (c *RackConfig) RegisterFlags(fs *flag.FlagSet) { registerFlags(fs, c.parts()...) }

// Validate reports every problem of every part at once.
func (c RackConfig) Validate() error { return validate(c.parts()...) }

// Region is a region with the NATS connection it was built on.
type Region struct {
	*region.Region
	nc *nats.Conn
}

// NewRegion connects to NATS as regiond and builds the region on that
// connection and pool. The connection's Name is set here; the caller
// gives the rest of nc.
func NewRegion(cfg region.Config, nc dial.NATSConfig, pool *pgxpool.Pool, log *slog.Logger) (*Region, error) {
	nc.Name = "regiond"
	conn, err := dial.NATS(nc, log)
	if err != nil {
		return nil, err
	}
	r, err := region.New(cfg, pool, conn, log)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Region{Region: r, nc: conn}, nil
}

// Close closes the NATS connection; call it once Run has returned, or
// instead of Run.
func (r *Region) Close() { r.nc.Close() }

// Rack is a rack with the NATS connection it was built on.
type Rack struct {
	*rack.Rack
	nc *nats.Conn
}

// NewRack connects to NATS as rackd and builds the rack on that
// connection. The rack's id comes first, from its data directory: the
// connection's reply inbox carries it, so NATS permissions can confine
// the rack to its own replies. The connection's Name and InboxPrefix are
// set here; the caller gives the rest of nc.
func NewRack(ctx context.Context, cfg rack.Config, nc dial.NATSConfig, log *slog.Logger) (*Rack, error) {
	// Checked before the data directory is used for the id.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, err := rack.LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	nc.Name, nc.InboxPrefix = "rackd "+cfg.Name, events.RackInboxPrefix(id)
	conn, err := dial.NATS(nc, log)
	if err != nil {
		return nil, err
	}
	r, err := rack.New(ctx, cfg, conn, log)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Rack{Rack: r, nc: conn}, nil
}

// Close closes the NATS connection; call it once Run has returned, or
// instead of Run.
func (r *Rack) Close() { r.nc.Close() }
