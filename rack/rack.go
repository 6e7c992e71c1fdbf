package rack

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/journal"
	"github.com/rackplane/rackplane/internal/natsmetrics"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/capabilities"
	"github.com/rackplane/rackplane/rack/dhcp"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/httpboot"
	"github.com/rackplane/rackplane/rack/images"
	"github.com/rackplane/rackplane/rack/machinecred"
	"github.com/rackplane/rackplane/rack/metadata"
	"github.com/rackplane/rackplane/rack/offload"
	"github.com/rackplane/rackplane/rack/power"
	"github.com/rackplane/rackplane/rack/preseedcache"
	"github.com/rackplane/rackplane/rack/reportqueue"
	"github.com/rackplane/rackplane/rack/storage"
	"github.com/rackplane/rackplane/rack/subnets"
	"github.com/rackplane/rackplane/rack/tftp"
)

// Config is the rack's configuration: what New and Run use. How the
// binary reaches NATS and how it logs are not here: rackd dials and hands
// New the connection (internal/daemon).
type Config struct {
	DataDir           string
	Name              string
	HTTPAddr          string
	HeartbeatInterval time.Duration
	EventBuffer       int

	// EventJournalMaxBytes bounds the event journal in <data-dir>/journal,
	// where events wait, on disk, until JetStream has them.
	EventJournalMaxBytes int64
	// EventFlushTimeout is how long a stopping rack keeps publishing what
	// its journal holds; the rest goes on the next start.
	EventFlushTimeout time.Duration

	// Images.
	ImportSystemBootloaders bool
	ScrubAtStart            bool
	KeepImageVersions       int
	InFlightWindow          time.Duration

	// Storage providers.
	StorageSearchPath []string
	StorageTimeout    time.Duration
	// StoragePollInterval is how often the search path is looked at for
	// providers added, changed or removed; 0 is the storage package's
	// default (10s). Tests shorten it.
	StoragePollInterval time.Duration

	// Power drivers (-power-* flags): the script drivers' search path,
	// the timeout of an action and how many run at once.
	Power power.Settings
	// PowerPollInterval is how often the power search path is looked at
	// for script drivers added, changed or removed; 0 is the power
	// package's default (10s). Tests shorten it.
	PowerPollInterval time.Duration

	// Booting.
	TFTPAddrs     []string
	TFTPWindow    int
	BootURL       string
	BootRoot      string
	OffloadSocket string

	// PreseedDir holds default preseeds (<name>.preseed) the rack ships.
	PreseedDir string

	// BootFilesOverHTTP makes iPXE fetch kernels and initrds from the
	// rack's HTTP server (BootURL) rather than over TFTP.
	BootFilesOverHTTP bool

	// UnknownWait is how long iPXE on a machine the region does not know
	// asks again for its boot config before it boots locally: the region
	// makes a machine of the MAC when it first asks, and with
	// auto-commission gives it a boot decision within moments, so the
	// machine commissions on this boot rather than on its next. Zero
	// boots unknown machines locally at once.
	UnknownWait time.Duration

	// BootEvents bounds the events of boot requests (-boot-events-*):
	// beyond them, requests are counted in one summary event per
	// interval rather than reported one by one.
	BootEvents handoff.TelemetryLimits

	// DHCP is the rack's DHCP server (-dhcp-* flags; off by default).
	DHCP dhcp.Config

	// HTTP bounds the rack's HTTP server (-http-* flags): timeouts,
	// sizes, connections. Boot files are never cut off while they move.
	HTTP httpserver.Config
}

// DefaultConfig returns the defaults. The name is the host name (empty
// when it is unknown, which Validate reports).
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		DataDir:           "/var/lib/rackplane/rack",
		Name:              host,
		HTTPAddr:          ":5248",
		HeartbeatInterval: 2 * time.Second,
		EventBuffer:       50000,

		EventJournalMaxBytes: journal.DefaultMaxBytes,
		EventFlushTimeout:    5 * time.Second,

		ImportSystemBootloaders: true,
		KeepImageVersions:       2,
		InFlightWindow:          time.Hour,
		StorageSearchPath:       []string{"/usr/share/rackplane/storage", "/etc/rackplane/storage"},
		StorageTimeout:          5 * time.Minute,
		Power:                   power.DefaultSettings(),
		TFTPAddrs:               []string{":69"},
		TFTPWindow:              8,
		PreseedDir:              "/etc/rackplane/preseeds",
		BootFilesOverHTTP:       true,
		UnknownWait:             30 * time.Second,
		BootEvents:              handoff.DefaultTelemetryLimits(),
		DHCP:                    dhcp.DefaultConfig(),
		HTTP:                    httpserver.DefaultConfig(),
	}
}

// RegisterFlags binds c's fields to flags of fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the rack id, images and caches")
	fs.StringVar(&c.Name, "name", c.Name, "rack name shown by the region (default: the host name)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address of the rack's HTTP server (boot files, preseeds, metrics)")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", c.HeartbeatInterval, "how often the rack tells the region it is alive")
	fs.IntVar(&c.EventBuffer, "event-buffer", c.EventBuffer, "events kept in memory until the journal's next group commit before the oldest are dropped (and counted)")
	fs.Int64Var(&c.EventJournalMaxBytes, "event-journal-max-bytes", c.EventJournalMaxBytes, "size cap of the event journal (<data-dir>/journal); beyond it events are dropped and counted")
	fs.DurationVar(&c.EventFlushTimeout, "event-flush-timeout", c.EventFlushTimeout, "how long a stopping rack keeps publishing journalled events; the rest go on the next start")
	fs.BoolVar(&c.ImportSystemBootloaders, "import-system-bootloaders", c.ImportSystemBootloaders, "import the bootloaders of this machine's packages (pxelinux, syslinux-common, grub-efi-amd64-bin or -signed with shim-signed, ipxe, debian-installer-12-netboot-arm64) at start")
	fs.BoolVar(&c.ScrubAtStart, "scrub-at-start", c.ScrubAtStart, "verify every stored image file against its sha256 at start")
	fs.IntVar(&c.KeepImageVersions, "keep-image-versions", c.KeepImageVersions, "newest versions of each image that garbage collection always keeps")
	fs.DurationVar(&c.InFlightWindow, "in-flight-window", c.InFlightWindow, "how long after a file was handed out its image version counts as being booted from")
	fs.Func("storage-search-path", "comma-separated directories holding storage provider directories (default "+strings.Join(c.StorageSearchPath, ",")+")", flagenv.List(&c.StorageSearchPath))
	fs.Func("tftp-addr", "comma-separated addresses of the TFTP server; empty turns it off (default "+strings.Join(c.TFTPAddrs, ",")+")", flagenv.List(&c.TFTPAddrs))
	fs.IntVar(&c.TFTPWindow, "tftp-window", c.TFTPWindow, "most TFTP blocks in flight: the windowsize granted to clients that ask (RFC 7440), and blocks sent ahead to those that do not while they keep up (1: strict lock-step)")
	fs.StringVar(&c.BootURL, "boot-url", c.BootURL, "URL machines reach this rack's HTTP server at, put in boot configs (default: http://<first non-loopback address>:<http port>)")
	fs.StringVar(&c.BootRoot, "boot-root", c.BootRoot, "fallback directory for boot files (default <data-dir>/boot-root)")
	fs.StringVar(&c.PreseedDir, "preseed-dir", c.PreseedDir, "directory of default preseeds (<name>.preseed) this rack ships to the region")
	fs.BoolVar(&c.BootFilesOverHTTP, "boot-files-over-http", c.BootFilesOverHTTP, "iPXE fetches kernel and initrd over HTTP from -boot-url (false: over TFTP)")
	fs.DurationVar(&c.UnknownWait, "unknown-wait", c.UnknownWait, "how long iPXE on a machine the region does not know keeps asking for its boot config (every 5s) before it boots locally, so that a discovered machine commissions on its first boot (0: boot locally at once)")
	fs.StringVar(&c.OffloadSocket, "offload-socket", c.OffloadSocket, "Unix socket for an external TFTP front-end (MAAS offload protocol); empty turns it off")
	fs.DurationVar(&c.StorageTimeout, "storage-timeout", c.StorageTimeout, "how long a storage provider script may run")
	c.Power.RegisterFlags(fs)
	c.BootEvents.RegisterFlags(fs)
	c.DHCP.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs, "http-", "the rack's HTTP server")
}

// Validate reports every problem of c at once, each saying what to fix.
// It changes nothing: defaults are DefaultConfig's.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is empty: give a directory the rack may write"))
	}
	if c.Name == "" {
		errs = append(errs, errors.New("-name is empty: give the rack a name (the default is the host name)"))
	}
	if len(c.Name) > 253 {
		errs = append(errs, errors.New("-name is longer than 253 characters"))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("-http-addr %q: want host:port, such as :5248", c.HTTPAddr))
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.HeartbeatInterval > time.Hour {
		errs = append(errs, fmt.Errorf("-heartbeat-interval %s: want 100ms to 1h", c.HeartbeatInterval))
	}
	if c.UnknownWait < 0 || c.UnknownWait > time.Hour {
		errs = append(errs, fmt.Errorf("-unknown-wait %s: want 0 to 1h", c.UnknownWait))
	}
	if c.KeepImageVersions < 1 {
		errs = append(errs, fmt.Errorf("-keep-image-versions %d: want 1 or more", c.KeepImageVersions))
	}
	if c.InFlightWindow < time.Minute {
		errs = append(errs, fmt.Errorf("-in-flight-window %s: want at least 1m", c.InFlightWindow))
	}
	for _, d := range c.StorageSearchPath {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("-storage-search-path: %q is not an absolute path", d))
		}
	}
	if c.StorageTimeout < time.Second {
		errs = append(errs, fmt.Errorf("-storage-timeout %s: want at least 1s", c.StorageTimeout))
	}
	for _, a := range c.TFTPAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("-tftp-addr %q: want host:port, such as :69", a))
		}
	}
	if c.TFTPWindow < 1 || c.TFTPWindow > 64 {
		errs = append(errs, fmt.Errorf("-tftp-window %d: want 1 to 64", c.TFTPWindow))
	}
	if err := CheckBootURL(c.BootURL); err != nil {
		errs = append(errs, err)
	}
	if c.EventBuffer < 100 {
		errs = append(errs, fmt.Errorf("-event-buffer %d: want 100 or more", c.EventBuffer))
	}
	if c.EventJournalMaxBytes < journal.MinMaxBytes {
		errs = append(errs, fmt.Errorf("-event-journal-max-bytes %d: want at least %d", c.EventJournalMaxBytes, journal.MinMaxBytes))
	}
	if c.EventFlushTimeout < 0 || c.EventFlushTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("-event-flush-timeout %s: want 0 to 10m", c.EventFlushTimeout))
	}
	if err := c.Power.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.BootEvents.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.DHCP.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HTTP.Validate("http-"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Rack is a running rack controller.
type Rack struct {
	cfg       Config
	opts      options
	id        string
	nc        *nats.Conn
	log       *slog.Logger
	now       func() time.Time
	registry  *prometheus.Registry
	journal   *journal.Journal
	publisher *eventbus.Publisher
	rpc       *rpc.Server
	// powerRPC answers power alone: a flood of power requests waits
	// there, not in the slots of the rest of the rack's rpc.
	powerRPC *rpc.Server
	mux      *http.ServeMux
	// bootPaths remembers, by path, whether the mux routes it to the
	// boot files (bootPath); bootPathsN counts them.
	bootPaths  sync.Map
	bootPathsN atomic.Int64
	ln         net.Listener
	http       *httpserver.Server
	started    time.Time
	seq        atomic.Int64

	images       *images.Store
	storage      *storage.Manager
	power        *power.Manager
	capabilities *capabilities.Reporter

	decisions     *bootconfig.Cache
	resolver      *handoff.Resolver
	tftp          *tftp.Server
	httpboot      *httpboot.Server
	offloadStore  *offload.Store
	offload       *offload.Offload
	offloadSocket *offload.SocketServer
	dhcp          *dhcp.Server
	regionSubnets *subnets.Cache // managed DHCP only

	preseedStore   *preseedcache.Store
	creds          *machinecred.Keyring
	machineRefused *prometheus.CounterVec
	preseeds       *preseedcache.Prefetcher
	reports        *reportqueue.Queue
	reportsRefused *prometheus.CounterVec

	fetchesMu     sync.Mutex
	fetchesQueued map[string]string // machine id → decision key of the cached fetch queued for the region
}

// Option changes what New builds in ways an operator has no say in.
type Option func(*options)

type options struct {
	imageClock func() time.Time
}

// WithImageClock makes now the clock of the image store's garbage
// collection windows (time.Now otherwise): tests move it forward to age
// versions past -in-flight-window.
func WithImageClock(now func() time.Time) Option {
	return func(o *options) { o.imageClock = now }
}

// New builds a rack on a NATS connection (which should retry forever:
// racks keep working while NATS is away). It takes the HTTP and TFTP
// addresses right away, so they are known on return, and opens the image
// store, which may mean verifying every image (-scrub-at-start) within
// ctx. When it fails it releases all it took; Run releases it otherwise.
func New(ctx context.Context, cfg Config, nc *nats.Conn, log *slog.Logger, opts ...Option) (_ *Rack, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	id, err := LoadOrCreateID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	log = log.With("rack_id", id)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	natsmetrics.Register(reg, nc)
	r := &Rack{
		cfg: cfg, opts: o, id: id, nc: nc, log: log, now: time.Now, registry: reg,
		// Handlers get as long as the longest action a rack runs (a storage
		// script); each bounds its own work more tightly.
		rpc: rpc.NewServer(nc, id, log, 64, max(30*time.Second, cfg.StorageTimeout+10*time.Second)),
		// Room for the actions running and as many again waiting for a
		// slot; each may wait a timeout for it, then run one.
		powerRPC: rpc.NewServer(nc, id, log, 2*cfg.Power.Concurrency, 2*cfg.Power.Timeout+10*time.Second),
		mux:      http.NewServeMux(),
	}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	// Events go to the journal before NATS, so none is lost to an outage,
	// a stop or a crash; what the last run left there goes out first.
	r.journal, err = journal.Open(journal.Config{
		Dir: filepath.Join(cfg.DataDir, "journal"), MaxBytes: cfg.EventJournalMaxBytes,
		Logger: log.With("service", "journal"), Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("event journal: %w", err)
	}
	r.publisher = eventbus.NewPublisher(js, eventbus.PublisherConfig{
		Source: events.RackSource(id), Subject: events.RackStreamName(id), Journal: r.journal,
		Buffer: cfg.EventBuffer, Logger: log, Registerer: reg,
	})
	r.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	if r.cfg.BootURL == "" {
		r.cfg.BootURL = defaultBootURL(r.ln.Addr().(*net.TCPAddr))
	}
	if err := r.openServices(ctx, js); err != nil {
		return nil, err
	}
	r.mux.Handle("/", r.httpboot.Handler())
	r.mux.HandleFunc("GET /preseed/{machine}", r.servePreseed)
	r.mux.HandleFunc("GET /preseed/{machine}/{credential}", r.servePreseed)
	r.mux.HandleFunc("POST /status/{machine}/{token}", r.serveStatus)
	r.mux.HandleFunc("/preseed/", r.refuseMachinePath)
	r.mux.HandleFunc("/status/", r.refuseMachinePath)
	agent, err := agentapi.New(agentapi.Config{RackID: id, Boot: r.decisions.Agent, Check: r.creds.Check,
		Publish: r.publisher.Publish, Refused: r.machineRefused, Logger: log.With("service", "agent-api"),
		Scripts: r.askCommissioningScripts, Task: r.deployTask, Written: r.diskWritten,
		Now: func() time.Time { return r.now() }})
	if err != nil {
		return nil, err
	}
	agent.Register(r.mux)
	md, err := metadata.New(metadata.Config{BaseURL: r.cfg.BootURL, Deployment: r.decisions.MetadataDeployment, Check: r.creds.Check,
		MACs: r.machineMACs, UserData: r.userData, PhoneHome: r.phoneHome, Refused: r.machineRefused,
		Logger: log.With("service", "metadata")})
	if err != nil {
		return nil, err
	}
	md.Register(r.mux)
	r.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	r.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"ok\",\"rack_id\":%q}\n", id)
	})
	if r.http, err = httpserver.New(cfg.HTTP, "rack", r.mux, log, reg); err != nil {
		return nil, err
	}
	// Boot files, the requests of every booting machine, are answered on
	// the connection itself; the mux gets the rest, and the requests for
	// boot files the fast path leaves to it.
	r.http.SetFast(r.httpboot.Fast(r.bootPath))
	return r, nil
}

// maxBootPaths bounds the paths whose route bootPath remembers: they
// come from the network.
const maxBootPaths = 4096

// bootPath says whether the mux routes a GET or HEAD of path to the boot
// files, remembering the answer for the paths machines ask for again and
// again (kernels, initrds, boot loaders).
func (r *Rack) bootPath(method, path string) bool {
	if v, ok := r.bootPaths.Load(path); ok {
		return v.(bool)
	}
	_, pattern := r.mux.Handler(&http.Request{Method: method, URL: &url.URL{Path: path}})
	boot := pattern == "/"
	// GET and HEAD route alike: no pattern of the mux names HEAD alone.
	if r.bootPathsN.Load() < maxBootPaths {
		if _, loaded := r.bootPaths.LoadOrStore(path, boot); !loaded {
			r.bootPathsN.Add(1)
		}
	}
	return boot
}

// defaultBootURL is the rack's HTTP server at its first address a machine
// could reach: not loopback, unless there is nothing else.
func defaultBootURL(addr *net.TCPAddr) string {
	host := "127.0.0.1"
	if !addr.IP.IsUnspecified() {
		host = addr.IP.String()
	} else {
		for _, a := range localAddresses() {
			if ip := net.ParseIP(a); ip != nil && ip.To4() != nil && !ip.IsLoopback() {
				host = a
				break
			}
		}
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// close releases what New took: the listeners and the image store's lock.
// Any of them may be missing when New failed before taking it.
func (r *Rack) close() {
	if r.tftp != nil {
		r.tftp.Close()
	}
	if r.resolver != nil {
		_ = r.resolver.Close()
	}
	if r.images != nil {
		_ = r.images.Close()
	}
	if r.reports != nil {
		_ = r.reports.Close()
	}
	if r.ln != nil {
		_ = r.ln.Close()
	}
	if r.journal != nil {
		_ = r.journal.Close()
	}
}

// openServices opens the image store and storage providers and the
// capability reporter that describes them. New's clean-up closes what it
// opened when it fails.
func (r *Rack) openServices(ctx context.Context, js jetstream.JetStream) error {
	dataDir, err := filepath.Abs(r.cfg.DataDir)
	if err != nil {
		return err
	}
	// The reporter is told of changes by the services it describes, so it
	// exists first and learns of them after.
	r.capabilities = capabilities.New(capabilities.Config{RackID: r.id, Publisher: r.publisher, Logger: r.log.With("service", "capabilities"),
		PreseedDir: r.cfg.PreseedDir, PowerPollInterval: r.cfg.Power.StatePollInterval})
	r.images, err = images.Open(ctx, images.Config{
		DataDir: dataDir, RackID: r.id, Publisher: r.publisher, Logger: r.log.With("service", "images"),
		Registerer: r.registry, KeepNewest: r.cfg.KeepImageVersions, InFlightWindow: r.cfg.InFlightWindow,
		ScrubAtOpen: r.cfg.ScrubAtStart, OnChange: r.capabilities.Changed, Now: r.opts.imageClock,
	})
	if err != nil {
		return fmt.Errorf("image store: %w", err)
	}
	r.storage, err = storage.New(storage.Config{
		RackID: r.id, SearchPath: r.cfg.StorageSearchPath, DataDir: dataDir,
		ActionTimeout: r.cfg.StorageTimeout, PollInterval: r.cfg.StoragePollInterval,
		Events: r.publisher, Logger: r.log.With("service", "storage"), Registerer: r.registry,
		OnChange: func([]storage.Provider) { r.capabilities.Changed() },
	})
	if err != nil {
		return fmt.Errorf("storage providers: %w", err)
	}
	pcfg := power.DefaultConfig()
	pcfg.Settings, pcfg.RackID, pcfg.Events = r.cfg.Power, r.id, r.publisher
	if r.cfg.PowerPollInterval > 0 {
		pcfg.PollInterval = r.cfg.PowerPollInterval
	}
	pcfg.Logger, pcfg.Registerer = r.log.With("service", "power"), r.registry
	pcfg.OnChange = func([]events.PowerDriver) { r.capabilities.Changed() }
	if r.power, err = power.New(pcfg); err != nil {
		return fmt.Errorf("power drivers: %w", err)
	}
	r.capabilities.Describe(r.images, r.storage.Providers, r.power.Drivers)
	return r.openBoot(js, dataDir)
}

// Images returns the rack's image store.
func (r *Rack) Images() *images.Store { return r.images }

// Capabilities returns the rack's capability reporter.
func (r *Rack) Capabilities() *capabilities.Reporter { return r.capabilities }

// ID returns the rack's id.
func (r *Rack) ID() string { return r.id }

// HTTPAddr returns where the rack's HTTP server listens.
func (r *Rack) HTTPAddr() string { return r.ln.Addr().String() }

// Publisher returns the rack's event publisher.
func (r *Rack) Publisher() *eventbus.Publisher { return r.publisher }

// Emit builds an event of the rack and queues it for publishing.
func (r *Rack) Emit(typ, subject string, data any) error {
	ev, err := events.New(events.RackSource(r.id), typ, subject, r.now(), data)
	if err != nil {
		return err
	}
	r.publisher.Publish(ev)
	return nil
}

// Info is the answer to the info rpc.
type Info struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	HTTP      []string  `json:"http"`
	Buffered  int       `json:"buffered_events"`
	Dropped   int64     `json:"dropped_events"`
}

func (r *Rack) info() Info {
	return Info{ID: r.id, Name: r.cfg.Name, Version: rackplane.Version, StartedAt: r.started,
		HTTP: []string{r.HTTPAddr()}, Buffered: r.publisher.Buffered(), Dropped: r.publisher.Dropped()}
}

// Run serves until ctx ends, then releases what New took.
func (r *Rack) Run(ctx context.Context) error {
	defer r.close()
	r.started = r.now().UTC().Truncate(time.Microsecond)
	infoHandler := func(context.Context, []byte) (any, error) { return r.info(), nil }
	if err := r.rpc.Handle(events.RackRPCSubject(r.id, events.MethodInfo), "", infoHandler); err != nil {
		return err
	}
	defer r.rpc.Close()
	if err := r.images.RegisterRPC(r.rpc, r.id); err != nil {
		return err
	}
	if err := r.storage.RegisterRPC(r.rpc, r.id); err != nil {
		return err
	}
	defer r.powerRPC.Close()
	if err := r.power.RegisterRPC(r.powerRPC, r.id); err != nil {
		return err
	}
	if err := r.capabilities.RegisterRPC(r.rpc, r.id); err != nil {
		return err
	}
	if err := r.offload.HandleRPC(r.rpc, r.id); err != nil {
		return err
	}

	// The publisher runs on past ctx, until the flush below: the events
	// queued before and while the other services stop still go out.
	pubCtx, stopPublisher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublisher()
	published := make(chan struct{})
	go func() { _ = r.publisher.Run(pubCtx); close(published) }()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.capabilities.Run(ctx) })
	g.Go(func() error { return r.storage.Run(ctx) })
	g.Go(func() error { return r.power.Run(ctx) })
	g.Go(func() error { return r.decisions.Run(ctx) })
	g.Go(func() error { return r.preseeds.Run(ctx) })
	g.Go(func() error { return r.reports.Run(ctx) })
	g.Go(func() error { return r.syncReferences(ctx) })
	g.Go(func() error { return r.offloadStore.Run(ctx) })
	g.Go(func() error { return r.resolver.Run(ctx) })
	g.Go(func() error { return r.offload.Completions(ctx, r.nc, r.id) })
	if r.tftp != nil {
		g.Go(func() error { return r.tftp.Run(ctx) })
	}
	if r.offloadSocket != nil {
		g.Go(func() error { return r.offloadSocket.Run(ctx) })
	}
	if r.dhcp != nil {
		g.Go(func() error { return r.dhcp.Run(ctx) })
	}
	if r.regionSubnets != nil {
		g.Go(func() error { return r.regionSubnets.Run(ctx) })
	}
	if r.cfg.ImportSystemBootloaders {
		if _, err := r.images.StartImport(images.Source{SystemBootloaders: true}); err != nil {
			r.log.Warn("system bootloaders not imported", "err", err)
		}
	}
	g.Go(func() error { return r.presence(ctx) })
	// In the group: Serve returns once the requests in progress are done
	// (or a few seconds have passed), and Run must wait for them.
	g.Go(func() error { return r.http.Serve(ctx, r.ln) })
	r.log.Info("rack running", "name", r.cfg.Name, "http_addr", r.HTTPAddr(), "boot_url", r.cfg.BootURL)
	err := g.Wait()
	// Publish what can go within the flush timeout. Stopping the publisher
	// commits whatever is still in memory to the journal; what JetStream
	// has not taken by then stays there for the next start.
	fctx, cancel := context.WithTimeout(context.Background(), r.cfg.EventFlushTimeout)
	defer cancel()
	ferr := r.publisher.Flush(fctx)
	stopPublisher()
	<-published
	if ferr != nil {
		r.log.Warn("events not yet published stay in the journal and go on the next start",
			"events_journalled", r.journal.Pending(), "journal_bytes", r.journal.Bytes(), "journal_dir", r.journal.Dir(),
			"flush_timeout", r.cfg.EventFlushTimeout.String())
	} else {
		r.log.Info("all events published")
	}
	return err
}

// presence registers on every (re)connect and sends heartbeats.
func (r *Rack) presence(ctx context.Context) error {
	connected := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(connected)
	if err := r.register(); err != nil {
		return err
	}
	t := time.NewTicker(r.cfg.HeartbeatInterval)
	defer t.Stop()
	r.heartbeat()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-connected:
			r.log.Info("connected to NATS, registering again")
			if err := r.register(); err != nil {
				return err
			}
			r.capabilities.Republish()
			r.heartbeat()
		case <-t.C:
			r.heartbeat()
		}
	}
}

func (r *Rack) register() error {
	host, _ := os.Hostname()
	return r.Emit(events.TypeRackRegistered, events.RackStreamName(r.id), events.RackRegistered{
		Name: r.cfg.Name, Version: rackplane.Version, Hostname: host, Addresses: localAddresses(),
		HTTP: []string{r.HTTPAddr()}, TFTP: r.TFTPAddrs(), BootURL: r.cfg.BootURL, HeartbeatIntervalMS: r.cfg.HeartbeatInterval.Milliseconds(),
		StartedAt: r.started, DHCP: r.dhcpStatus(),
	})
}

func (r *Rack) heartbeat() {
	if !r.nc.IsConnected() {
		return // a heartbeat is only worth anything now
	}
	ev, err := events.New(events.RackSource(r.id), events.TypeHeartbeat, events.RackStreamName(r.id), r.now(),
		events.Heartbeat{Seq: r.seq.Add(1), IntervalMS: r.cfg.HeartbeatInterval.Milliseconds(),
			BufferedEvents: int64(r.publisher.Buffered()), DroppedEvents: r.publisher.Dropped()})
	if err != nil {
		r.log.Error("build heartbeat", "err", err)
		return
	}
	b, err := events.Encode(ev)
	if err == nil {
		err = r.nc.Publish(events.HeartbeatSubject(r.id), b)
	}
	if err != nil {
		r.log.Debug("heartbeat not sent", "err", err)
	}
}

func localAddresses() []string {
	var out []string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
			out = append(out, ipn.IP.String())
		}
		if len(out) == 256 {
			break
		}
	}
	return out
}
