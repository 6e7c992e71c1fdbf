// Package rackd starts a rack as rackd does: its settings, checked
// together, and the rack built on a NATS connection dialled as that rack.
package rackd

import (
	"context"
	"flag"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/rack"
)

// Config is all of rackd's settings.
type Config struct {
	Rack rack.Config
	NATS dial.NATSConfig
	Log  logging.Config
}

// DefaultConfig returns the defaults of every part.
func DefaultConfig() Config {
	return Config{Rack: rack.DefaultConfig(), NATS: dial.DefaultNATSConfig(), Log: logging.DefaultConfig()}
}

func (c *Config) parts() []daemon.Part { return []daemon.Part{&c.Rack, &c.NATS, &c.Log} }

// RegisterFlags binds every part's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) { daemon.RegisterFlags(fs, c.parts()...) }

// Validate reports every problem of every part at once.
func (c Config) Validate() error { return daemon.Validate(c.parts()...) }

// Rack is a rack with the NATS connection it was built on.
type Rack struct {
	*rack.Rack
	nc *nats.Conn
}

// New connects to NATS as rackd and builds the rack on that connection.
// The rack's id comes first, from its data directory: the connection's
// reply inbox carries it, so NATS permissions can confine the rack to its
// own replies. The connection's Name, InboxPrefix and ServerCheck (the
// oldest NATS server version it takes) are set here; the
// caller gives the rest of nc.
func New(ctx context.Context, cfg rack.Config, nc dial.NATSConfig, log *slog.Logger) (*Rack, error) {
	// Checked before the data directory is used for the id.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	id, err := rack.LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	nc.Name, nc.InboxPrefix = "rackd "+cfg.Name, events.RackInboxPrefix(id)
	nc.ServerCheck = eventbus.CheckServerVersion
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
