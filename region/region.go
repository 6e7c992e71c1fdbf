package region

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
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
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/osregistry"
	"github.com/rackplane/rackplane/region/outbox"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/power"
	"github.com/rackplane/rackplane/region/preseed"
	"github.com/rackplane/rackplane/region/rackimages"
	"github.com/rackplane/rackplane/region/rackrpc"
	"github.com/rackplane/rackplane/region/retention"
	"github.com/rackplane/rackplane/region/scripts"
	"github.com/rackplane/rackplane/region/secrets"
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
	// IngestConcurrency is how many batches of rack events are stored
	// at once, each of other racks (ingest.Config.Concurrency).
	IngestConcurrency int
	DeployTimeout     time.Duration
	// CommissionTimeout is how long a commissioning may go without its
	// agent's outcome before the machine is failed (0: for ever).
	CommissionTimeout time.Duration
	// EraseTimeout is how long a release's disk erase may go without its
	// agent's outcome before the machine is failed (0: for ever).
	EraseTimeout time.Duration
	// ReleaseErase is how a release erases the disks when its request
	// does not say: none, quick or full.
	ReleaseErase string
	// Secrets is where the keys secrets are sealed with are: the region
	// does not start without one.
	Secrets secrets.Config
	// NoNATSCallout runs the region without its NATS auth callout: the
	// NATS server must then authorise clients by itself (static users as
	// `rackplane nats-permissions` prints them), or any client can act as
	// any rack or as the region. New refuses to run without the callout
	// unless this says so.
	NoNATSCallout bool
	// DiscoveryPerRackPerMinute and DiscoveryMaxNew cap the machines made
	// of boots of unknown MACs: on one rack in any minute, and still new
	// across racks (0: no cap).
	DiscoveryPerRackPerMinute int
	DiscoveryMaxNew           int
	// AutoCommission commissions a discovered machine at once, so that
	// an unknown MAC that PXE-boots ends ready with its hardware known,
	// as MAAS enlists; off, it stays new until an operator commissions
	// it. Either way a machine no rack has the ephemeral environment
	// for stays new.
	AutoCommission bool
	// TelemetryMaxAge and TelemetryKeepPerRack bound the boot telemetry
	// the event log keeps (postgres.TelemetryTypes): none older, and no
	// more of one rack's than the newest so many (0: no bound of that
	// kind); a pass prunes every TelemetryPruneInterval.
	TelemetryMaxAge        time.Duration
	TelemetryKeepPerRack   int
	TelemetryPruneInterval time.Duration
	// HTTP bounds the API's server: timeouts, sizes, connections.
	HTTP httpserver.Config
	// ReleasePowerOff is whether a release switches off a machine with
	// power parameters (the machine is releasing until it is off) when
	// the request does not say.
	ReleasePowerOff bool
	// PowerRetries and PowerRetryDelay say how the lifecycle's power work
	// (power on into a deployment, off at a release) is retried before
	// the machine fails; PowerActionTimeout bounds each rack request.
	PowerRetries       int
	PowerRetryDelay    time.Duration
	PowerActionTimeout time.Duration
	// PowerPollConcurrency bounds the power state polls in flight; how
	// often each machine is polled is its driving rack's to say
	// (rackd -power-poll-interval).
	PowerPollConcurrency int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		HTTPAddr:          "127.0.0.1:5240",
		HeartbeatMisses:   3,
		StreamMaxAge:      7 * 24 * time.Hour,
		StreamReplicas:    1,
		IngestBatch:       ingest.DefaultConfig().Batch,
		IngestConcurrency: ingest.DefaultConfig().Concurrency,
		DeployTimeout:     30 * time.Minute,
		CommissionTimeout: 30 * time.Minute,
		EraseTimeout:      2 * time.Hour,
		ReleaseErase:      events.EraseNone,
		Secrets:           secrets.DefaultConfig(),

		DiscoveryPerRackPerMinute: 60,
		DiscoveryMaxNew:           1000,
		AutoCommission:            true,

		TelemetryMaxAge:        7 * 24 * time.Hour,
		TelemetryKeepPerRack:   100_000,
		TelemetryPruneInterval: 5 * time.Minute,
		HTTP:                   httpserver.DefaultConfig(),

		ReleasePowerOff:    true,
		PowerRetries:       power.DefaultLifecycleConfig().Retries,
		PowerRetryDelay:    power.DefaultLifecycleConfig().RetryDelay,
		PowerActionTimeout: power.DefaultLifecycleConfig().ActionTimeout,

		PowerPollConcurrency: power.DefaultPollerConfig().Concurrency,
	}
}

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address the web API listens on")
	fs.IntVar(&c.HeartbeatMisses, "heartbeat-misses", c.HeartbeatMisses, "heartbeat intervals a rack may miss before it is offline")
	fs.DurationVar(&c.StreamMaxAge, "stream-max-age", c.StreamMaxAge, "how long events stay on the JetStream streams (Postgres keeps them for good)")
	fs.IntVar(&c.StreamReplicas, "nats-stream-replicas", c.StreamReplicas, "NATS servers holding each JetStream stream: 1 on a single server, 3 in a three-node cluster (applied to existing streams at start)")
	fs.IntVar(&c.IngestBatch, "ingest-batch", c.IngestBatch, "rack events appended per transaction")
	fs.IntVar(&c.IngestConcurrency, "ingest-concurrency", c.IngestConcurrency, "batches of rack events stored at once, each in a transaction and on a PostgreSQL connection of its own, of different racks (each rack's events are stored in order)")
	fs.DurationVar(&c.DeployTimeout, "deploy-timeout", c.DeployTimeout, "how long a deployment may go without its installer's report before the machine is marked failed (0: wait for ever)")
	fs.DurationVar(&c.CommissionTimeout, "commission-timeout", c.CommissionTimeout, "how long a commissioning may go without its agent's outcome before the machine is marked failed (0: wait for ever)")
	fs.DurationVar(&c.EraseTimeout, "erase-timeout", c.EraseTimeout, "how long a release's disk erase may go without its agent's outcome before the machine is marked failed (0: wait for ever); a full erase of large disks takes hours")
	fs.StringVar(&c.ReleaseErase, "release-erase", c.ReleaseErase, "how a release erases the machine's disks before it is ready: none, quick (partition tables and signatures) or full (every byte zeroed) (a release request's erase overrides this)")
	c.Secrets.RegisterFlags(fs)
	fs.BoolVar(&c.NoNATSCallout, "no-nats-callout", c.NoNATSCallout, "run without the NATS auth callout: the NATS server must authorise racks by itself (static users), or anyone reaching NATS can act as any rack or as the region")
	fs.IntVar(&c.DiscoveryPerRackPerMinute, "discovery-per-rack-per-minute", c.DiscoveryPerRackPerMinute, "machines made of boots of unknown MACs on one rack in any minute; more are refused and summed up in a discovery_refused event (0: no cap)")
	fs.IntVar(&c.DiscoveryMaxNew, "discovery-max-new", c.DiscoveryMaxNew, "discovered machines that may be new (not yet commissioned, deployed or deleted; commissioning, or failed without an inventory, counts) at once, across racks; beyond, boots of unknown MACs make no machine (0: no cap)")
	fs.BoolVar(&c.AutoCommission, "auto-commission", c.AutoCommission, "commission a machine discovered by the boot of an unknown MAC at once (it needs the ephemeral environment on its rack); off, it stays new until commissioned")
	fs.DurationVar(&c.TelemetryMaxAge, "telemetry-max-age", c.TelemetryMaxAge, "boot telemetry (hand-offs, transfers, refused requests, DHCP activity and their summaries) older than this is pruned from the event log; state changes never are (0: no age limit)")
	fs.IntVar(&c.TelemetryKeepPerRack, "telemetry-keep-per-rack", c.TelemetryKeepPerRack, "newest boot telemetry events of each rack the event log keeps; older ones are pruned (0: no count limit)")
	fs.DurationVar(&c.TelemetryPruneInterval, "telemetry-prune-interval", c.TelemetryPruneInterval, "how often boot telemetry is pruned from the event log")
	c.HTTP.RegisterFlags(fs, "http-", "the web API")
	fs.BoolVar(&c.ReleasePowerOff, "release-power-off", c.ReleasePowerOff, "a release switches off a machine that has power parameters, and the machine is ready only once it is off (a release request's power_off overrides this)")
	fs.IntVar(&c.PowerRetries, "power-retries", c.PowerRetries, "times a failed lifecycle power action (power on into a deployment, off at a release) is tried again before the machine fails")
	fs.DurationVar(&c.PowerRetryDelay, "power-retry-delay", c.PowerRetryDelay, "wait before the first retry of a lifecycle power action; it doubles with each retry")
	fs.DurationVar(&c.PowerActionTimeout, "power-action-timeout", c.PowerActionTimeout, "how long the lifecycle and the power poller wait for a rack's answer to one power request")
	fs.IntVar(&c.PowerPollConcurrency, "power-poll-concurrency", c.PowerPollConcurrency, "power state polls in flight at once, across racks (how often a machine is polled is set on its rack: rackd -power-poll-interval)")
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
	if c.IngestConcurrency < 1 || c.IngestConcurrency > ingest.MaxConcurrency {
		errs = append(errs, fmt.Errorf("-ingest-concurrency %d: want 1 to %d", c.IngestConcurrency, ingest.MaxConcurrency))
	}
	if c.DeployTimeout < 0 || c.DeployTimeout > 0 && c.DeployTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-deploy-timeout %s: want 0 (off) or at least 1s, such as 30m", c.DeployTimeout))
	}
	if c.CommissionTimeout < 0 || c.CommissionTimeout > 0 && c.CommissionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-commission-timeout %s: want 0 (off) or at least 1s, such as 30m", c.CommissionTimeout))
	}
	if c.EraseTimeout < 0 || c.EraseTimeout > 0 && c.EraseTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-erase-timeout %s: want 0 (off) or at least 1s, such as 2h", c.EraseTimeout))
	}
	if !slices.Contains(events.EraseModes, c.ReleaseErase) {
		errs = append(errs, fmt.Errorf("-release-erase %q: want none, quick or full", c.ReleaseErase))
	}
	if c.DiscoveryPerRackPerMinute < 0 {
		errs = append(errs, fmt.Errorf("-discovery-per-rack-per-minute %d: want 0 (no cap) or more", c.DiscoveryPerRackPerMinute))
	}
	if c.DiscoveryMaxNew < 0 {
		errs = append(errs, fmt.Errorf("-discovery-max-new %d: want 0 (no cap) or more", c.DiscoveryMaxNew))
	}
	if c.TelemetryMaxAge < 0 || c.TelemetryMaxAge > 0 && c.TelemetryMaxAge < time.Minute {
		errs = append(errs, fmt.Errorf("-telemetry-max-age %s: want 0 (no age limit) or at least 1m, such as 168h", c.TelemetryMaxAge))
	}
	if c.TelemetryKeepPerRack < 0 {
		errs = append(errs, fmt.Errorf("-telemetry-keep-per-rack %d: want 0 (no count limit) or more", c.TelemetryKeepPerRack))
	}
	if c.TelemetryPruneInterval < time.Second || c.TelemetryPruneInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("-telemetry-prune-interval %s: want 1s to 24h", c.TelemetryPruneInterval))
	}
	if c.PowerRetries < 0 || c.PowerRetries > 100 {
		errs = append(errs, fmt.Errorf("-power-retries %d: want 0 to 100", c.PowerRetries))
	}
	if c.PowerRetryDelay < 10*time.Millisecond || c.PowerRetryDelay > time.Hour {
		errs = append(errs, fmt.Errorf("-power-retry-delay %s: want 10ms to 1h, such as 10s", c.PowerRetryDelay))
	}
	if c.PowerActionTimeout < time.Second || c.PowerActionTimeout > 25*time.Minute {
		errs = append(errs, fmt.Errorf("-power-action-timeout %s: want 1s to 25m, such as 75s", c.PowerActionTimeout))
	}
	if c.PowerPollConcurrency < 1 || c.PowerPollConcurrency > 1024 {
		errs = append(errs, fmt.Errorf("-power-poll-concurrency %d: want 1 to 1024", c.PowerPollConcurrency))
	}
	if err := c.HTTP.Validate("http-"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, c.Secrets.Validate())...)
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
	powerLC  *power.Lifecycle
	poller   *power.Poller
	appended *postgres.EventWatch
	machines *machine.Service
	preseeds *preseed.Service
	follower *follower.Follower
	keys     *secrets.Keyring
	// unreadable counts the secrets under a key this region lacks.
	unreadable prometheus.Gauge
	callout    *natsauth.Service // nil with NoNATSCallout
	retirer    rackRetirer
	pruner     *retention.Pruner
	ln         net.Listener
}

// NATSAuth is what the region needs to be its NATS server's auth callout
// (region/natsauth): the key the server trusts the callout's answers
// from, and a connection of the region's user in the server's system
// account, with which it disconnects revoked racks.
type NATSAuth struct {
	Issuer nkeys.KeyPair
	System *nats.Conn
	// Account is where racks are placed (default natsauth.DefaultAccount).
	Account string
	// FirstJoinTokenFile is where the first join token goes when the
	// region makes it (empty: the log).
	FirstJoinTokenFile string
}

// New builds a region on an open pool and NATS connection. It listens on
// cfg.HTTPAddr right away, so the address is known (and taken) on return.
// auth makes it the NATS server's auth callout; nil is refused unless
// cfg.NoNATSCallout says to run without one.
func New(cfg Config, pool *pgxpool.Pool, nc *nats.Conn, auth *NATSAuth, log *slog.Logger) (*Region, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if (auth == nil) != cfg.NoNATSCallout {
		if auth == nil {
			return nil, errors.New("the region needs the NATS auth callout's keys, or -no-nats-callout to run without it")
		}
		return nil, errors.New("-no-nats-callout and the NATS auth callout's keys do not go together: choose one")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	keys, err := cfg.Secrets.Load(log)
	if err != nil {
		return nil, err
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
	r := &Region{cfg: cfg, db: db, nc: nc, js: js, log: log, registry: reg, keys: keys,
		unreadable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rackplane_region_secrets_unreadable",
			Help: "Secrets stored under a key this region was not given (or that do not open), as counted at start: give the key in -secrets-old-key-files, or set them again.",
		})}
	reg.MustRegister(r.unreadable)
	recordOnly := natsauth.RecordOnly{Store: db}
	var revoker api.RackRevoker = recordOnly
	r.retirer = recordOnly
	calloutOn := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "rackplane_region_nats_auth_callout",
		Help: "1 while the region is its NATS server's auth callout; 0 with -no-nats-callout, when only the server's own configuration keeps clients out.",
	})
	reg.MustRegister(calloutOn)
	if auth != nil {
		if r.callout, err = natsauth.New(nc, db, natsauth.Config{Account: auth.Account, Issuer: auth.Issuer, System: auth.System,
			FirstJoinTokenFile: auth.FirstJoinTokenFile, Logger: log.With("component", "natsauth"), Registerer: reg}); err != nil {
			return nil, err
		}
		revoker, r.retirer = r.callout, r.callout
		calloutOn.Set(1)
	}
	// Each batch being stored holds a connection: ingest under load must
	// leave the API, the followers and liveness half the pool.
	concurrency := cfg.IngestConcurrency
	if most := max(1, int(pool.Config().MaxConns)/2); concurrency > most {
		log.Info("ingest stores fewer batches at once than -ingest-concurrency: each holds a database connection, and half the pool is kept for the rest (pool_max_conns in -database-url raises it)",
			"ingest_concurrency", cfg.IngestConcurrency, "pool_max_conns", pool.Config().MaxConns, "ingest_concurrency_used", most)
		concurrency = most
	}
	r.ingest = ingest.New(js, db, v, ingest.Config{Batch: cfg.IngestBatch, Concurrency: concurrency, Logger: log, Registerer: reg, Streams: r.ensureStreams})
	r.monitor = liveness.New(nc, db, v, liveness.Config{Misses: cfg.HeartbeatMisses, Logger: log, Registerer: reg})
	r.relay = outbox.New(db, js, outbox.Config{Logger: log, Registerer: reg})
	r.appended = db.NewEventWatch()
	r.machines = machine.NewService(db, nil, log.With("component", "machine"))
	r.machines.SetReleasePowerOff(cfg.ReleasePowerOff)
	r.machines.SetAutoCommission(cfg.AutoCommission)
	r.machines.SetReleaseErase(cfg.ReleaseErase)
	r.preseeds = preseed.NewService(db, nil, log.With("component", "preseed"))
	if r.follower, err = follower.New(db, r.machines, r.preseeds, log.With("component", "follower"), follower.Config{Wake: r.appended, Registerer: reg,
		Discovery: machine.DiscoveryLimits{PerRackPerMinute: cfg.DiscoveryPerRackPerMinute, MaxNew: cfg.DiscoveryMaxNew}}); err != nil {
		return nil, err
	}
	if r.pruner, err = retention.New(db, retention.Config{Interval: cfg.TelemetryPruneInterval,
		Policy: postgres.RetentionPolicy{MaxAge: cfg.TelemetryMaxAge, KeepPerSource: cfg.TelemetryKeepPerRack},
		Logger: log.With("component", "retention"), Registerer: reg}); err != nil {
		return nil, err
	}
	powerSvc := power.New(db, nc, keys, nil, log.With("component", "power"))
	if r.powerLC, err = power.NewLifecycle(powerSvc, db, r.machines, power.LifecycleConfig{Retries: cfg.PowerRetries,
		RetryDelay: cfg.PowerRetryDelay, ActionTimeout: cfg.PowerActionTimeout, Wake: r.appended,
		Logger: log.With("component", "power_lifecycle"), Registerer: reg}); err != nil {
		return nil, err
	}
	if r.poller, err = power.NewPoller(powerSvc, db, power.PollerConfig{Concurrency: cfg.PowerPollConcurrency, Timeout: cfg.PowerActionTimeout,
		Logger: log.With("component", "power_poll"), Registerer: reg}); err != nil {
		return nil, err
	}
	r.api = api.New(api.Deps{DB: db, Machines: r.machines, Preseeds: r.preseeds, Scripts: scripts.NewService(db, nil), NATS: nc, Heartbeats: r.monitor,
		Appended:    r.appended,
		OSRegistry:  osregistry.New(db, nc, keys, nil, log.With("component", "osregistry")),
		RackImages:  rackimages.New(db, nc, log.With("component", "rackimages")),
		Volumes:     volume.New(db, nc, nil, log.With("component", "volume")),
		Power:       powerSvc,
		Subnets:     subnet.NewService(db, nil, log.With("component", "subnet")),
		RackRevoker: revoker, RackRetirer: r, NATSAuth: calloutState{r.callout},
		Logger: log, Registerer: reg, Gatherer: reg})
	ui, err := webui.New()
	if err != nil {
		return nil, err
	}
	ui.Register(r.api)
	if r.http, err = httpserver.New(cfg.HTTP, "api", r.api, log, reg); err != nil {
		return nil, err
	}
	if r.watch, err = deploywatch.New(r.machines, deploywatch.Config{Timeout: cfg.DeployTimeout, CommissionTimeout: cfg.CommissionTimeout, EraseTimeout: cfg.EraseTimeout, Logger: log.With("component", "deploywatch"), Registerer: reg}); err != nil {
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

// NATSAuthReady reports whether racks can connect to NATS as far as the
// region is concerned: its auth callout is listening (or there is none).
func (r *Region) NATSAuthReady() bool { return r.callout == nil || r.callout.Listening() }

// DB returns the region's database.
func (r *Region) DB() *postgres.DB { return r.db }

// Run migrates, then runs every part until ctx ends or one fails.
func (r *Region) Run(ctx context.Context) error {
	defer r.ln.Close()
	if r.callout == nil {
		r.log.Warn("the region runs WITHOUT its NATS auth callout (-no-nats-callout): racks are authorised only by the NATS server's own configuration; " +
			"on a server open to any client, anyone reaching NATS can publish as any rack or as the region, read every rack's traffic and change the event streams")
	}
	if err := r.db.Migrate(ctx); err != nil {
		return err
	}
	if err := r.reseal(ctx); err != nil {
		return err
	}
	if err := r.ensureStreams(ctx); err != nil {
		return err
	}
	rpcs := rpc.NewServer(r.nc, "region", r.log, 64, 10*time.Second)
	defer rpcs.Close()
	racks := rackrpc.New(r.db, r.machines, r.keys, r.js, r.log)
	for _, c := range racks.Collectors() {
		if err := r.registry.Register(c); err != nil {
			return fmt.Errorf("rack rpc metrics: %w", err)
		}
	}
	if err := racks.Register(rpcs); err != nil {
		return err
	}
	// Token uses are written until the API has stopped answering, and
	// once more after: the last requests' uses are not lost to the stop.
	usesCtx, stopUses := context.WithCancel(context.WithoutCancel(ctx))
	usesDone := make(chan error, 1)
	go func() { usesDone <- r.db.TokenUses().Run(usesCtx) }()
	defer func() {
		stopUses()
		<-usesDone
	}()
	g, ctx := errgroup.WithContext(ctx)
	if r.callout != nil {
		g.Go(func() error { return r.callout.Run(ctx) })
	}
	g.Go(func() error { return r.http.Serve(ctx, r.ln) })
	g.Go(func() error { return r.ingest.Run(ctx) })
	g.Go(func() error { return r.monitor.Run(ctx) })
	g.Go(func() error { return r.relay.Run(ctx) })
	g.Go(func() error { return r.watch.Run(ctx) })
	g.Go(func() error { return r.powerLC.Run(ctx) })
	g.Go(func() error { return r.poller.Run(ctx) })
	g.Go(func() error { return r.appended.Run(ctx) })
	g.Go(func() error { return r.db.TokenCache().Run(ctx) })
	g.Go(func() error { return r.follower.Run(ctx) })
	g.Go(func() error { return r.pruner.Run(ctx) })
	r.log.Info("region running", "http_addr", r.Addr())
	return g.Wait()
}

// reseal brings every stored secret under the current secrets key before
// anything is served: values the migration from clear storage left, and
// values under an old key. Secrets this region cannot open are left
// alone, counted and logged: its start does not depend on them.
func (r *Region) reseal(ctx context.Context) error {
	rep, err := r.db.ResealSecrets(ctx, r.keys, time.Now())
	if err != nil {
		return err
	}
	r.unreadable.Set(float64(rep.Unreadable))
	r.log.Info("secrets key", "key_id", r.keys.CurrentID(), "old_key_ids", r.keys.IDs()[1:],
		"secrets_current", rep.Current, "secrets_resealed", rep.Resealed, "secrets_sealed_from_clear", rep.Sealed)
	if rep.Unreadable > 0 {
		r.log.Error("secrets sealed under a key this region was not given: give that key's file in -secrets-old-key-files, or set them again",
			"secrets_unreadable", rep.Unreadable, "key_ids", rep.UnreadableKeys)
	}
	return nil
}

// calloutState is the callout's state for /readyz.
type calloutState struct{ s *natsauth.Service }

func (c calloutState) Callout() bool   { return c.s != nil }
func (c calloutState) Listening() bool { return c.s != nil && c.s.Listening() }

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
