// Package rackd starts a rack as rackd does: its settings, checked
// together, and the rack built on a NATS connection dialled as that rack.
package rackd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/rack"
)

// Config is all of rackd's settings.
type Config struct {
	Rack     rack.Config
	NATS     dial.NATSConfig
	NATSAuth NATSAuthConfig
	Log      logging.Config
	// Profiles is the admin listener of Go profiles (-pprof-addr; off).
	Profiles daemon.Profiles
}

// NATSAuthConfig is how the rack proves itself to NATS: by default with
// its nkey (made in its data directory) under its id, which the region's
// auth callout checks (region/natsauth), and a join token the first time,
// until the region has bound the rack to its nkey (sending it later is
// harmless).
type NATSAuthConfig struct {
	JoinToken     string
	JoinTokenFile string
	// Insecure connects without the nkey, to a NATS server open to any
	// client (nats.go refuses to sign for a server that asks for no
	// authentication).
	Insecure bool
}

// RegisterFlags binds c's fields to flags of fs.
func (c *NATSAuthConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.JoinToken, "join-token", c.JoinToken, "join token (rpj_...) for the rack's first connection to NATS; better from the environment or -join-token-file, out of process listings")
	fs.StringVar(&c.JoinTokenFile, "join-token-file", c.JoinTokenFile, "file holding the join token")
	fs.BoolVar(&c.Insecure, "insecure-nats", c.Insecure, "connect to a NATS server open to any client, without proving the rack's identity (the region's auth callout would refuse it)")
}

// Validate reports a token given twice, or with -insecure-nats.
func (c NATSAuthConfig) Validate() error {
	var errs []error
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		errs = append(errs, errors.New("-join-token and -join-token-file: give one of them"))
	}
	if c.Insecure && (c.JoinToken != "" || c.JoinTokenFile != "") {
		errs = append(errs, errors.New("-insecure-nats connects without credentials: drop the join token, or -insecure-nats"))
	}
	return errors.Join(errs...)
}

// token returns the join token: JoinToken, or JoinTokenFile's content
// ("" when neither is set).
func (c NATSAuthConfig) token() (string, error) {
	if c.JoinTokenFile == "" {
		return strings.TrimSpace(c.JoinToken), nil
	}
	b, err := os.ReadFile(c.JoinTokenFile)
	if err != nil {
		return "", fmt.Errorf("-join-token-file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// DefaultConfig returns the defaults of every part.
func DefaultConfig() Config {
	return Config{Rack: rack.DefaultConfig(), NATS: dial.DefaultNATSConfig(), Log: logging.DefaultConfig()}
}

func (c *Config) parts() []daemon.Part {
	return []daemon.Part{&c.Rack, &c.NATS, &c.NATSAuth, &c.Log, &c.Profiles}
}

// NKeyFile is where in its data directory a rack keeps the seed of the
// nkey it proves itself to NATS with (made on first start, 0600).
const NKeyFile = "nats.nk"

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
// user name and reply inbox carry it, so the region's auth callout knows
// which rack connects and NATS permissions confine it to its own
// subjects and replies. It proves it is that rack with its nkey, made in
// the data directory on first start (unless nc names a seed file), and
// sends auth's join token. Credentials in nc.URL (a static user of the
// server's own configuration) replace all that, as they do in nats.go.
// The connection's Name, User, Token, InboxPrefix, AuthHint and
// ServerCheck (the oldest NATS server version it takes) are set here;
// the caller gives the rest of nc.
func New(ctx context.Context, cfg rack.Config, nc dial.NATSConfig, auth NATSAuthConfig, log *slog.Logger) (*Rack, error) {
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
	switch {
	case auth.Insecure:
		log.Warn("-insecure-nats: connecting without proving this rack's identity, to a NATS server that must be open to any client " +
			"(anyone reaching it can act as this rack)")
	case dial.URLHasCredentials(nc.URL):
		// A static user of the server's configuration.
	default:
		if nc.NKeySeedFile == "" {
			nc.NKeySeedFile = filepath.Join(cfg.DataDir, NKeyFile)
			if _, err := dial.LoadOrCreateNKey(nc.NKeySeedFile, nkeys.CreateUser); err != nil {
				return nil, err
			}
		}
		if nc.Token, err = auth.token(); err != nil {
			return nil, err
		}
		nc.User = id
		nc.AuthHint = "the region refused rack " + id + ": a rack it does not know needs a valid join token (-join-token-file); " +
			"one it knows must connect with the same nkey (" + NKeyFile + " in -data-dir); a revoked rack stays refused. The region's log says why"
	}
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
