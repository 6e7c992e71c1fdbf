// Package regiond starts a region as regiond does: its settings, checked
// together, and the region built on a NATS connection dialled as regiond.
package regiond

import (
	"flag"
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/region"
)

// Config is all of regiond's settings.
type Config struct {
	Region   region.Config
	NATS     dial.NATSConfig
	Postgres dial.PostgresConfig
	Log      logging.Config
}

// DefaultConfig returns the defaults of every part.
func DefaultConfig() Config {
	return Config{Region: region.DefaultConfig(), NATS: dial.DefaultNATSConfig(), Log: logging.DefaultConfig()}
}

func (c *Config) parts() []daemon.Part { return []daemon.Part{&c.Region, &c.NATS, &c.Postgres, &c.Log} }

// RegisterFlags binds every part's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) { daemon.RegisterFlags(fs, c.parts()...) }

// Validate reports every problem of every part at once.
func (c Config) Validate() error { return daemon.Validate(c.parts()...) }

// Region is a region with the NATS connection it was built on.
type Region struct {
	*region.Region
	nc *nats.Conn
}

// New connects to NATS as regiond and builds the region on that
// connection and pool. The connection's Name and ServerCheck (the
// oldest NATS server version it takes) are set here; the caller
// gives the rest of nc.
func New(cfg region.Config, nc dial.NATSConfig, pool *pgxpool.Pool, log *slog.Logger) (*Region, error) {
	nc.Name, nc.ServerCheck = "regiond", eventbus.CheckServerVersion
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
