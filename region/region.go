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

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/natsmetrics"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/deploywatch"
	"github.com/rackplane/rackplane/region/follower"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/liveness"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/osregistry"
	"github.com/rackplane/rackplane/region/outbox"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/rackimages"
	"github.com/rackplane/rackplane/region/rackrpc"
	"github.com/rackplane/rackplane/region/subnet"
	"github.com/rackplane/rackplane/region/volume"
	"github.com/rackplane/rackplane/region/webui"
)

// Config is the region's configuration: what New and Run use. How the
// binary reaches NATS and PostgreSQL and how it logs are not here: regiond
// dials and hands New the connections (internal/daemon).
type Config struct {
	HTTPAddr        string
	HeartbeatMisses int
	StreamMaxAge    time.Duration
	// StreamReplicas is how many NATS servers hold each stream: 1 on a
	// single server, 3 in a three-node JetStream cluster.
	StreamReplicas int
	IngestBatch    int
	DeployTimeout  time.Duration
	// HTTP bounds the API's server: timeouts, sizes, connections.
	HTTP httpserver.Config
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:        "127.0.0.1:5240",
		HeartbeatMisses: 3,
		StreamMaxAge:    7 * 24 * time.Hour,
		StreamReplicas:  1,
		IngestBatch:     500,
		DeployTimeout:   30 * time.Minute,
		HTTP:            httpserver.DefaultConfig(),
	}
}

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address the web API listens on")
	fs.IntVar(&c.HeartbeatMisses, "heartbeat-misses", c.HeartbeatMisses, "heartbeat intervals a rack may miss before it is offline")
	fs.DurationVar(&c.StreamMaxAge, "stream-max-age", c.StreamMaxAge, "how long events stay on the JetStream streams (Postgres keeps them for good)")
	fs.IntVar(&c.StreamReplicas, "nats-stream-replicas", c.StreamReplicas, "NATS servers holding each JetStream stream: 1 on a single server, 3 in a three-node cluster (applied to existing streams at start)")
	fs.IntVar(&c.IngestBatch, "ingest-batch", c.IngestBatch, "rack events appended per transaction")
	fs.DurationVar(&c.DeployTimeout, "deploy-timeout", c.DeployTimeout, "how long a deployment may go without its installer's report before the machine is marked failed (0: wait for ever)")
	c.HTTP.RegisterFlags(fs, "http-", "the web API")
}

// Validate reports every problem of c at once, each saying what to fix.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("-http-addr %q: want host:port, such as 127.0.0.1:5240", c.HTTPAddr))
	}
	if c.HeartbeatMisses < 1 {
		errs = append(errs, fmt.Errorf("-heartbeat-misses %d: want 1 or more", c.HeartbeatMisses))
	}
	if c.StreamMaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("-stream-max-age %s: want at least 1m", c.StreamMaxAge))
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > eventbus.MaxStreamReplicas {
		errs = append(errs, fmt.Errorf("-nats-stream-replicas %d: want 1 to %d (3 in a three-node NATS cluster)", c.StreamReplicas, eventbus.MaxStreamReplicas))
	}
	if c.IngestBatch < 1 || c.IngestBatch > 10000 {
		errs = append(errs, fmt.Errorf("-ingest-batch %d: want 1 to 10000", c.IngestBatch))
	}
	if c.DeployTimeout < 0 || c.DeployTimeout > 0 && c.DeployTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-deploy-timeout %s: want 0 (off) or at least 1s, such as 30m", c.DeployTimeout))
	}
	if err := c.HTTP.Validate("http-"); err != nil {
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
	http     *httpserver.Server
	ingest   *ingest.Ingester
	monitor  *liveness.Monitor
	relay    *outbox.Relay
	watch    *deploywatch.Watch
	appended *postgres.EventWatch
	machines *machine.Service
	preseeds *preseed.Service
	follower *follower.Follower
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
	reg.MustRegister(db.Collectors()...)
	r := &Region{cfg: cfg, db: db, nc: nc, js: js, log: log, registry: reg}
	r.ingest = ingest.New(js, db, v, ingest.Config{Batch: cfg.IngestBatch, Logger: log, Registerer: reg})
	r.monitor = liveness.New(nc, db, v, liveness.Config{Misses: cfg.HeartbeatMisses, Logger: log, Registerer: reg})
	r.relay = outbox.New(db, js, outbox.Config{Logger: log, Registerer: reg})
	r.appended = db.NewEventWatch()
	r.machines = machine.NewService(db, nil, log.With("component", "machine"))
	r.preseeds = preseed.NewService(db, nil, log.With("component", "preseed"))
	if r.follower, err = follower.New(db, r.machines, r.preseeds, log.With("component", "follower"), follower.Config{Wake: r.appended, Registerer: reg}); err != nil {
		return nil, err
	}
	r.api = api.New(api.Deps{DB: db, Machines: r.machines, Preseeds: r.preseeds, NATS: nc, Heartbeats: r.monitor,
		Appended:   r.appended,
		OSRegistry: osregistry.New(db, nc, nil, log.With("component", "osregistry")),
		RackImages: rackimages.New(db, nc, log.With("component", "rackimages")),
		Volumes:    volume.New(db, nc, nil, log.With("component", "volume")),
		Subnets:    subnet.NewService(db, nil, log.With("component", "subnet")),
		Logger:     log, Registerer: reg, Gatherer: reg})
	ui, err := webui.New()
	if err != nil {
		return nil, err
	}
	ui.Register(r.api)
	if r.http, err = httpserver.New(cfg.HTTP, "api", r.api, log, reg); err != nil {
		return nil, err
	}
	if r.watch, err = deploywatch.New(r.machines, deploywatch.Config{Timeout: cfg.DeployTimeout, Logger: log.With("component", "deploywatch"), Registerer: reg}); err != nil {
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
	racks := rackrpc.New(r.db, r.machines, r.log)
	for _, c := range racks.Collectors() {
		if err := r.registry.Register(c); err != nil {
			return fmt.Errorf("rack rpc metrics: %w", err)
		}
	}
	if err := racks.Register(rpcs); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.http.Serve(ctx, r.ln) })
	g.Go(func() error { return r.ingest.Run(ctx) })
	g.Go(func() error { return r.monitor.Run(ctx) })
	g.Go(func() error { return r.relay.Run(ctx) })
	g.Go(func() error { return r.watch.Run(ctx) })
	g.Go(func() error { return r.appended.Run(ctx) })
	g.Go(func() error { return r.follower.Run(ctx) })
	r.log.Info("region running", "http_addr", r.Addr())
	return g.Wait()
}

// ensureStreams retries while NATS is not there yet, or its cluster too
// small for the replicas (it may be forming); a server too old or not
// clustered at all is reported at once, since waiting cannot fix that.
func (r *Region) ensureStreams(ctx context.Context) error {
	var permanent error
	err := backoff.Retry(ctx, backoff.Policy{Max: time.Second}, func(ctx context.Context) error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := eventbus.CheckServerVersion(r.nc); err != nil {
			if rackplane.ErrorCode(err) == rackplane.EINVALID {
				permanent = err
				return nil
			}
			return err
		}
		err := eventbus.EnsureReplicatedStreams(sctx, r.js, eventbus.StreamOptions{MaxAge: r.cfg.StreamMaxAge, Replicas: r.cfg.StreamReplicas})
		if rackplane.ErrorCode(err) == rackplane.EINVALID {
			permanent, err = fmt.Errorf("-nats-stream-replicas %d: %w", r.cfg.StreamReplicas, err), nil
		}
		return err
	}, func(err error, wait time.Duration) {
		r.log.Warn("JetStream not ready, retrying", "err", err, "retry_in", wait)
	})
	if permanent != nil {
		return permanent
	}
	return err
}
