package region

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/natsmetrics"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/deploywatch"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/liveness"
	"github.com/rackplane/rackplane/region/outbox"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/rackrpc"
	"github.com/rackplane/rackplane/region/webui"
)

// Config is the region's configuration.
type Config struct {
	HTTPAddr                              string
	DatabaseURL                           string
	NATSURL                               string
	NATSCAFile, NATSCertFile, NATSKeyFile string
	NATSNKeyFile                          string
	HeartbeatMisses                       int
	StreamMaxAge                          time.Duration
	IngestBatch                           int
	DeployTimeout                         time.Duration
	LogLevel                              string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:        "127.0.0.1:5240",
		NATSURL:         nats.DefaultURL,
		HeartbeatMisses: 3,
		StreamMaxAge:    7 * 24 * time.Hour,
		IngestBatch:     500,
		DeployTimeout:   30 * time.Minute,
		LogLevel:        "info",
	}
}

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address the web API listens on")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL or key=value string (empty: libpq defaults and PG* variables; DATABASE_URL is read too)")
	fs.StringVar(&c.NATSURL, "nats-url", c.NATSURL, "NATS server URL(s), comma separated; a user and password or a token go in the URL")
	fs.StringVar(&c.NATSNKeyFile, "nats-nkey", c.NATSNKeyFile, "file holding the nkey seed to authenticate to NATS with")
	fs.StringVar(&c.NATSCAFile, "nats-ca", c.NATSCAFile, "CA certificate(s) to verify the NATS server with; turns TLS on")
	fs.StringVar(&c.NATSCertFile, "nats-cert", c.NATSCertFile, "client certificate for a NATS server that verifies clients")
	fs.StringVar(&c.NATSKeyFile, "nats-key", c.NATSKeyFile, "key of -nats-cert")
	fs.IntVar(&c.HeartbeatMisses, "heartbeat-misses", c.HeartbeatMisses, "heartbeat intervals a rack may miss before it is offline")
	fs.DurationVar(&c.StreamMaxAge, "stream-max-age", c.StreamMaxAge, "how long events stay on the JetStream streams (Postgres keeps them for good)")
	fs.IntVar(&c.IngestBatch, "ingest-batch", c.IngestBatch, "rack events appended per transaction")
	fs.DurationVar(&c.DeployTimeout, "deploy-timeout", c.DeployTimeout, "how long a deployment may go without its installer's report before the machine is marked failed (0: wait for ever)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
}

// Validate reports every problem of c at once, each saying what to fix.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("-http-addr %q: want host:port, such as 127.0.0.1:5240", c.HTTPAddr))
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("-nats-url is empty: give the NATS server, such as nats://127.0.0.1:4222"))
	}
	if (c.NATSCertFile == "") != (c.NATSKeyFile == "") {
		errs = append(errs, errors.New("-nats-cert and -nats-key go together: give both or neither"))
	}
	if c.HeartbeatMisses < 1 {
		errs = append(errs, fmt.Errorf("-heartbeat-misses %d: want 1 or more", c.HeartbeatMisses))
	}
	if c.StreamMaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("-stream-max-age %s: want at least 1m", c.StreamMaxAge))
	}
	if c.IngestBatch < 1 || c.IngestBatch > 10000 {
		errs = append(errs, fmt.Errorf("-ingest-batch %d: want 1 to 10000", c.IngestBatch))
	}
	if c.DeployTimeout < 0 || c.DeployTimeout > 0 && c.DeployTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-deploy-timeout %s: want 0 (off) or at least 1s, such as 30m", c.DeployTimeout))
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Region is a running region controller.
type Region struct {
	cfg      Config
	db       *postgres.DB
	nc       *nats.Conn
	js       jetstream.JetStream
	log      *slog.Logger
	registry *prometheus.Registry
	api      *api.Server
	ingest   *ingest.Ingester
	monitor  *liveness.Monitor
	relay    *outbox.Relay
	watch    *deploywatch.Watch
	appended *postgres.EventWatch
	ln       net.Listener
}

// New builds a region on an open pool and NATS connection. It listens on
// cfg.HTTPAddr right away, so the address is known (and taken) on return.
func New(cfg Config, pool *pgxpool.Pool, nc *nats.Conn, log *slog.Logger) (*Region, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	v, err := events.NewValidator()
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	natsmetrics.Register(reg, nc)
	db := postgres.New(pool, log)
	r := &Region{cfg: cfg, db: db, nc: nc, js: js, log: log, registry: reg}
	r.api = api.New(db, nc, log, reg, reg)
	r.ingest = ingest.New(js, db, v, ingest.Config{Batch: cfg.IngestBatch, Logger: log, Registerer: reg})
	r.monitor = liveness.New(nc, db, v, liveness.Config{Misses: cfg.HeartbeatMisses, Logger: log, Registerer: reg})
	r.relay = outbox.New(db, js, outbox.Config{Logger: log, Registerer: reg})
	r.api.SetHeartbeats(r.monitor)
	r.appended = db.NewEventWatch()
	r.api.SetEventWatch(r.appended)
	ui, err := webui.New()
	if err != nil {
		return nil, err
	}
	ui.Register(r.api)
	if r.watch, err = deploywatch.New(db, deploywatch.Config{Timeout: cfg.DeployTimeout, Logger: log.With("component", "deploywatch"), Registerer: reg}); err != nil {
		return nil, err
	}
	r.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	return r, nil
}

// Addr is where the API listens.
func (r *Region) Addr() string { return r.ln.Addr().String() }

// DB returns the region's database.
func (r *Region) DB() *postgres.DB { return r.db }

// Run migrates, then runs every part until ctx ends or one fails.
func (r *Region) Run(ctx context.Context) error {
	defer r.ln.Close()
	if err := r.db.Migrate(ctx); err != nil {
		return err
	}
	if err := r.ensureStreams(ctx); err != nil {
		return err
	}
	rpcs := rpc.NewServer(r.nc, "region", r.log, 64, 10*time.Second)
	defer rpcs.Close()
	if err := rackrpc.New(r.db, r.log).Register(rpcs); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.api.ListenAndServe(ctx, r.ln) })
	g.Go(func() error { return r.ingest.Run(ctx) })
	g.Go(func() error { return r.monitor.Run(ctx) })
	g.Go(func() error { return r.relay.Run(ctx) })
	g.Go(func() error { return r.watch.Run(ctx) })
	g.Go(func() error { return r.appended.Run(ctx) })
	g.Go(func() error { return follower.New(r.db, r.log.With("component", "follower")).Run(ctx) })
	r.log.Info("region running", "http_addr", r.Addr())
	return g.Wait()
}

// ensureStreams retries while NATS is not there yet.
func (r *Region) ensureStreams(ctx context.Context) error {
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := eventbus.EnsureStreams(sctx, r.js, r.cfg.StreamMaxAge)
		cancel()
		if err == nil {
			return nil
		}
		r.log.Warn("JetStream not ready, retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
