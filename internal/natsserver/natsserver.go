package natsserver

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	Host     string // default 127.0.0.1
	Port     int    // -1 picks a free port
	StoreDir string // JetStream storage; required
	Name     string
	// ConfigFile is a NATS server configuration (authorization, accounts,
	// ...) the fields above are laid over.
	ConfigFile string
	// Auth, when set, secures the server for the region's auth callout
	// (instead of ConfigFile). Without it and ConfigFile the server is
	// open: any client may publish and subscribe to anything.
	Auth *Auth
	// SyncInterval is how often JetStream syncs its stores to disk (0:
	// nats-server's default, 2 minutes).
	SyncInterval time.Duration
	// Cluster, when set, makes the server one node of a JetStream
	// cluster: it listens for routes on ClusterPort and routes to every
	// URL of Cluster.Routes (its own among them is ignored).
	Cluster *ClusterConfig
}

// ClusterConfig is a node's part in a cluster.
type ClusterConfig struct {
	Name   string // the same on every node
	Port   int    // routes listen here, on Config.Host
	Routes []string
}

// Start starts a server and waits until it accepts connections. It logs
// nothing; StartSupervised logs.
func Start(cfg Config) (*server.Server, error) {
	return start(cfg, nil)
}

func start(cfg Config, log server.Logger) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: a JetStream store directory is required")
	}
	opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	// nats-server only logs that it cannot listen, and is then never
	// ready: try the ports first, so that one in use is said at once.
	for _, port := range []int{opts.Port, opts.Cluster.Port} {
		if port <= 0 {
			continue
		}
		addr := net.JoinHostPort(opts.Host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if log != nil {
		s.SetLoggerV2(log, false, false, false)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s:%d after 10s", opts.Host, opts.Port)
	}
	return s, nil
}

func options(cfg Config) (*server.Options, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	opts := &server.Options{}
	switch {
	case cfg.Auth != nil && cfg.ConfigFile != "":
		return nil, fmt.Errorf("embedded nats: a configuration file and Auth do not go together")
	case cfg.Auth != nil:
		if err := cfg.Auth.Validate(); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		if err := opts.ProcessConfigString(cfg.Auth.ServerConfig()); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	case cfg.ConfigFile != "":
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
	}
	opts.ServerName, opts.Host, opts.Port = cfg.Name, cfg.Host, cfg.Port
	opts.JetStream, opts.StoreDir = true, cfg.StoreDir
	opts.NoSigs, opts.NoLog = true, true
	opts.MaxPayload = 8 << 20
	if cfg.SyncInterval > 0 {
		opts.SyncInterval = cfg.SyncInterval
	}
	if c := cfg.Cluster; c != nil {
		if cfg.Name == "" {
			return nil, fmt.Errorf("embedded nats: a cluster node needs a name")
		}
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = c.Name, cfg.Host, c.Port
		routes, err := routeURLs(c.Routes)
		if err != nil {
			return nil, err
		}
		opts.Routes = routes
	}
	return opts, nil
}

// Reload makes a running server take up cfg.ConfigFile again, as
// `nats-server --signal reload` does (users, permissions, TLS).
func Reload(s *server.Server, cfg Config) error {
	opts, err := options(cfg)
	if err != nil {
		return err
	}
	if err := s.ReloadOptions(opts); err != nil {
		return fmt.Errorf("embedded nats: reload: %w", err)
	}
	return nil
}

func routeURLs(routes []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, r := range routes {
		u, err := url.Parse(r)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: route %q: %w", r, err)
		}
		out = append(out, u)
	}
	return out, nil
}
