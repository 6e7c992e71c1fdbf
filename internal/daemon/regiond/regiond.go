// Package regiond starts a region as regiond does: its settings, checked
// together, and the region built on a NATS connection dialled as regiond.
package regiond

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/natsauth"
)

// Config is all of regiond's settings.
type Config struct {
	Region   region.Config
	NATS     dial.NATSConfig
	NATSAuth NATSAuthConfig
	Postgres dial.PostgresConfig
	Log      logging.Config
	// Profiles is the admin listener of Go profiles (-pprof-addr; off).
	Profiles daemon.Profiles
}

// NATSAuthConfig is what the region needs to be its NATS server's auth
// callout (region/natsauth): files the operator (or rackplane nats-init)
// made, read at start.
type NATSAuthConfig struct {
	// IssuerSeedFile holds the seed of the account key the server's
	// auth_callout names as issuer (SA...).
	IssuerSeedFile string
	// SystemNKeyFile holds the seed of the region's user in the server's
	// system account, which disconnects revoked racks.
	SystemNKeyFile string
	// Account is where racks are placed: the server's auth_callout
	// account.
	Account string
	// FirstJoinTokenFile is where the first join token goes when the
	// region makes it (empty: the log, once).
	FirstJoinTokenFile string
}

// RegisterFlags binds c's fields to flags of fs.
func (c *NATSAuthConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.IssuerSeedFile, "nats-issuer-seed", c.IssuerSeedFile, "file with the seed of the account key the NATS server's auth_callout trusts (issuer): the region signs racks' credentials with it")
	fs.StringVar(&c.SystemNKeyFile, "nats-system-nkey", c.SystemNKeyFile, "file with the nkey seed of the region's user in the NATS system account: it disconnects revoked racks")
	fs.StringVar(&c.Account, "nats-account", c.Account, "NATS account of the region and the racks (the auth_callout account)")
	fs.StringVar(&c.FirstJoinTokenFile, "first-join-token-file", c.FirstJoinTokenFile, "when the region makes the first join token (none was ever made), write it here instead of logging it")
}

// Validate reports every problem of c at once. Whether the files are
// needed depends on -no-nats-callout: Config.Validate checks that.
func (c NATSAuthConfig) Validate() error {
	if c.Account == "" {
		return errors.New("-nats-account is empty: give the NATS server's auth_callout account, such as " + natsauth.DefaultAccount)
	}
	return nil
}

// DefaultConfig returns the defaults of every part.
func DefaultConfig() Config {
	return Config{Region: region.DefaultConfig(), NATS: dial.DefaultNATSConfig(), NATSAuth: NATSAuthConfig{Account: natsauth.DefaultAccount},
		Log: logging.DefaultConfig()}
}

func (c *Config) parts() []daemon.Part {
	return []daemon.Part{&c.Region, &c.NATS, &c.NATSAuth, &c.Postgres, &c.Log, &c.Profiles}
}

// RegisterFlags binds every part's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) { daemon.RegisterFlags(fs, c.parts()...) }

// Validate reports every problem of every part at once, and of how they
// go together: the region runs as the NATS auth callout, with its keys,
// or with -no-nats-callout, without them.
func (c Config) Validate() error {
	errs := []error{daemon.Validate(c.parts()...)}
	a := c.NATSAuth
	if c.Region.NoNATSCallout {
		if a.IssuerSeedFile != "" || a.SystemNKeyFile != "" || a.FirstJoinTokenFile != "" {
			errs = append(errs, errors.New("-no-nats-callout runs without the NATS auth callout: drop -nats-issuer-seed, -nats-system-nkey and -first-join-token-file, or -no-nats-callout"))
		}
	} else {
		if a.IssuerSeedFile == "" {
			errs = append(errs, errors.New("-nats-issuer-seed is empty: the region authorises racks on NATS (its auth callout) with that key (rackplane nats-init makes one); "+
				"or run with -no-nats-callout on a NATS server that authorises racks by itself"))
		}
		if a.SystemNKeyFile == "" {
			errs = append(errs, errors.New("-nats-system-nkey is empty: the region disconnects revoked racks as that NATS system account user (rackplane nats-init makes one)"))
		}
	}
	return errors.Join(errs...)
}

// ValidateTools reports the problems of the settings regiond's tools
// (token create, projections rebuild) use: they only reach PostgreSQL.
func (c Config) ValidateTools() error { return daemon.Validate(&c.Postgres, &c.Log) }

// Region is a region with the NATS connections it was built on.
type Region struct {
	*region.Region
	conns []*nats.Conn
}

// New connects to NATS as regiond and builds the region on that
// connection and pool; as the server's auth callout (unless
// cfg.NoNATSCallout), also as the region's system account user, with the
// issuer key read from its file. The connections' Name and ServerCheck
// (the oldest NATS server version it takes) are set here; the caller
// gives the rest of nc.
func New(cfg region.Config, nc dial.NATSConfig, auth NATSAuthConfig, pool *pgxpool.Pool, log *slog.Logger) (*Region, error) {
	nc.Name, nc.ServerCheck = "regiond", eventbus.CheckServerVersion
	r := &Region{}
	var rauth *region.NATSAuth
	if !cfg.NoNATSCallout {
		issuer, err := readSeed(auth.IssuerSeedFile, "-nats-issuer-seed")
		if err != nil {
			return nil, err
		}
		sys := nc
		sys.Name, sys.NKeySeedFile = "regiond system", auth.SystemNKeyFile
		sysConn, err := dial.NATS(sys, log.With("nats_user", "system"))
		if err != nil {
			return nil, err
		}
		r.conns = append(r.conns, sysConn)
		rauth = &region.NATSAuth{Issuer: issuer, System: sysConn, Account: auth.Account, FirstJoinTokenFile: auth.FirstJoinTokenFile}
	}
	conn, err := dial.NATS(nc, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.conns = append(r.conns, conn)
	if r.Region, err = region.New(cfg, pool, conn, rauth, log); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// readSeed reads the nkey seed in path (flag names the setting).
func readSeed(path, flag string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("%s %s: not an nkey seed: %w", flag, path, err)
	}
	return kp, nil
}

// Close closes the NATS connections; call it once Run has returned, or
// instead of Run.
func (r *Region) Close() {
	for _, c := range r.conns {
		c.Close()
	}
}
