package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/internal/daemon"
	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/httpserver"
	"github.com/rackplane/rackplane/internal/lab"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/rack/dhcp"
	"github.com/rackplane/rackplane/rack/power"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/secrets"
)

type devConfig struct {
	DataDir      string
	DatabaseURL  string
	NATSAddr     string
	HTTPAddr     string
	RackHTTPAddr string
	TFTPAddr     string
	RackName     string
	// BootInterface puts the built-in rack on a network machines boot
	// from: its TFTP (port 69), HTTP and DHCP servers listen on the
	// interface's address, and boot configs name that address. Empty:
	// everything stays on loopback, where no firmware can reach it.
	BootInterface string
	// BootURL is where machines reach the rack's HTTP server (default:
	// from -boot-interface, else from -rack-http-addr).
	BootURL string
	// InsecureNATS runs the embedded NATS open to any client, and the
	// region without its auth callout.
	InsecureNATS bool
	// VMs, when not 0, runs a lab of that many QEMU machines booting
	// from the built-in rack (internal/lab).
	VMs int
	// DHCP is the rack's DHCP server, with rackd's -dhcp-* flags. With
	// -boot-interface and no -dhcp-mode it answers in proxy mode.
	DHCP dhcp.Config
	// Power is the rack's power drivers' settings (rackd's -power-*
	// flags): script drivers in the search path drive dev's machines.
	Power power.Settings
	Log   logging.Config
	// HTTP and RackHTTP bound the region's and the rack's HTTP servers
	// (-http-* and -rack-http-* flags).
	HTTP, RackHTTP httpserver.Config
	// Profiles is the admin listener of the process's Go profiles, the
	// region's and the rack's together (-pprof-addr; off).
	Profiles daemon.Profiles

	// set holds the flags given on the command line, so that
	// -boot-interface fills in only what was not.
	set map[string]bool
}

// Ports of the boot network with -boot-interface: the ones firmware uses.
const (
	devBootTFTPPort = "69"
	devBootHTTPPort = "5248"
)

func defaultDevConfig() devConfig {
	return devConfig{DataDir: ".rackplane", NATSAddr: "127.0.0.1:4250", HTTPAddr: "127.0.0.1:5240",
		RackHTTPAddr: "127.0.0.1:5248", TFTPAddr: "127.0.0.1:6969", RackName: "dev-rack",
		DHCP: dhcp.DefaultConfig(), Power: power.DefaultSettings(), Log: logging.DefaultConfig(),
		HTTP: httpserver.DefaultConfig(), RackHTTP: httpserver.DefaultConfig()}
}

func (c *devConfig) registerFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "where NATS, the rack and caches keep their data")
	fs.StringVar(&c.DatabaseURL, "database-url", c.DatabaseURL, "PostgreSQL URL (default $DATABASE_URL, else the local server with libpq defaults and database rackplane, created if missing)")
	fs.StringVar(&c.NATSAddr, "nats-addr", c.NATSAddr, "address of the embedded NATS server")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address of the region's web API")
	fs.StringVar(&c.RackHTTPAddr, "rack-http-addr", c.RackHTTPAddr, "address of the rack's HTTP server")
	fs.StringVar(&c.TFTPAddr, "tftp-addr", c.TFTPAddr, "address of the rack's TFTP server")
	fs.StringVar(&c.RackName, "rack-name", c.RackName, "name of the built-in rack")
	fs.StringVar(&c.BootInterface, "boot-interface", c.BootInterface, "network interface machines boot from: the rack's TFTP (:"+devBootTFTPPort+"), HTTP (:"+devBootHTTPPort+") and DHCP (proxy unless -dhcp-mode says otherwise) serve its address; flags given explicitly win")
	fs.StringVar(&c.BootURL, "boot-url", c.BootURL, "URL machines reach the rack's HTTP server at, put in boot configs (default: from -boot-interface, else -rack-http-addr)")
	fs.BoolVar(&c.InsecureNATS, "insecure-nats", c.InsecureNATS, "run the embedded NATS open to any client, without the region's auth callout: anyone reaching -nats-addr can act as any rack or as the region")
	fs.IntVar(&c.VMs, "vms", c.VMs, fmt.Sprintf("run a lab: a network namespace with a bridge the rack serves DHCP, TFTP and HTTP on, and this many QEMU VMs (1 to %d; SeaBIOS and UEFI in turn) that PXE-boot, enlist and commission; needs root, qemu-system-x86 and ovmf", lab.MaxVMs))
	c.DHCP.RegisterFlags(fs)
	c.Power.RegisterFlags(fs)
	c.Log.RegisterFlags(fs)
	c.HTTP.RegisterFlags(fs, "http-", "the web API")
	c.RackHTTP.RegisterFlags(fs, "rack-http-", "the rack's HTTP server")
	c.Profiles.RegisterFlags(fs)
}

func (c devConfig) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("-data-dir is empty"))
	}
	if err := rack.CheckBootURL(c.BootURL); err != nil {
		errs = append(errs, err)
	}
	if d := c.dhcp(); d.Mode != dhcp.ModeOff && d.Mode != "" && d.Interface == "" {
		errs = append(errs, fmt.Errorf("-dhcp-mode %s: give -boot-interface (or -dhcp-interface), the network machines boot from", d.Mode))
	} else if err := d.Validate(); err != nil {
		errs = append(errs, err)
	}
	for flagName, addr := range map[string]string{"-nats-addr": c.NATSAddr, "-http-addr": c.HTTPAddr, "-rack-http-addr": c.RackHTTPAddr, "-tftp-addr": c.TFTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", flagName, addr))
		}
	}
	return errors.Join(append(errs, c.Power.Validate(), c.Log.Validate(), c.HTTP.Validate("http-"), c.RackHTTP.Validate("rack-http-"), c.Profiles.Validate())...)
}

// onBootNetwork returns c with the rack's addresses on its boot
// interface's IPv4 address (ip), for every address flag not given
// explicitly.
func (c devConfig) onBootNetwork(ip netip.Addr) devConfig {
	if c.BootInterface == "" {
		return c
	}
	host := ip.String()
	if !c.set["tftp-addr"] {
		c.TFTPAddr = net.JoinHostPort(host, devBootTFTPPort)
	}
	if !c.set["rack-http-addr"] {
		c.RackHTTPAddr = net.JoinHostPort(host, devBootHTTPPort)
	}
	c.DHCP = c.dhcp()
	return c
}

// dhcp is the rack's DHCP configuration: with -boot-interface, proxy mode
// on that interface unless the flags say otherwise.
func (c devConfig) dhcp() dhcp.Config {
	d := c.DHCP
	if c.BootInterface == "" {
		return d
	}
	if !c.set["dhcp-interface"] {
		d.Interface = c.BootInterface
	}
	if !c.set["dhcp-mode"] {
		d.Mode = dhcp.ModeProxy
	}
	return d
}

// interfaceIPv4 is the first IPv4 address of the interface named name.
func interfaceIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-boot-interface %s: %w (ip -br addr lists the interfaces)", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("-boot-interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && n.IP.To4() != nil {
				return ip, nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("-boot-interface %s has no IPv4 address: give it one (ip addr add ... dev %s)", name, name)
}

// bootURL is where machines reach the rack's HTTP server.
func (c devConfig) bootURL() string {
	if c.BootURL != "" {
		return c.BootURL
	}
	return "http://" + c.RackHTTPAddr
}

// rack is the built-in rack's configuration: rackd's defaults with dev's
// addresses, name, DHCP server and data directory (under dataDir, made
// absolute).
func (c devConfig) rack(dataDir string) rack.Config {
	kcfg := rack.DefaultConfig()
	kcfg.DataDir, kcfg.Name, kcfg.HTTPAddr = filepath.Join(dataDir, "rack"), c.RackName, c.RackHTTPAddr
	kcfg.TFTPAddrs = []string{c.TFTPAddr}
	kcfg.BootURL = c.bootURL()
	kcfg.DHCP = c.DHCP
	kcfg.Power = c.Power
	kcfg.HTTP = c.RackHTTP
	return kcfg
}

// region is the region's configuration: regiond's defaults with dev's
// address, and the secrets key kept in dataDir.
func (c devConfig) region(dataDir string) region.Config {
	rcfg := region.DefaultConfig()
	rcfg.HTTPAddr = c.HTTPAddr
	rcfg.Secrets.KeyFile = devKeyFile(dataDir)
	rcfg.NoNATSCallout = c.InsecureNATS
	rcfg.HTTP = c.HTTP
	return rcfg
}

// devKeyFile is where rackplane dev keeps the region's secrets key.
func devKeyFile(dataDir string) string { return filepath.Join(dataDir, "secrets.key") }

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultDevConfig()
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	cfg.registerFlags(fs)
	// Flags that do not parse and invalid settings are reported
	// together, every one of them.
	parseErr := parse(fs, args, stderr)
	if errors.Is(parseErr, flag.ErrHelp) {
		return parseErr
	}
	cfg.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { cfg.set[f.Name] = true })
	if err := errors.Join(parseErr, cfg.validate()); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	if cfg.VMs != 0 {
		return runLab(ctx, cfg, args, stdout, stderr)
	}
	if cfg.BootInterface != "" {
		ip, err := interfaceIPv4(cfg.BootInterface)
		if err != nil {
			return fmt.Errorf("configuration:\n%w", err)
		}
		cfg = cfg.onBootNetwork(ip)
	}
	log := cfg.Log.Logger()

	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	dbURL, err := devDatabase(ctx, dial.DatabaseURL(cfg.DatabaseURL), log)
	if err != nil {
		return err
	}
	pool, err := dial.Postgres(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	db := postgres.New(pool, log)
	token, err := devToken(ctx, db, filepath.Join(dataDir, "token"), devCreatedBy(dataDir))
	if err != nil {
		return err
	}
	// The key licence keys are sealed with in PostgreSQL: made on the
	// first start, mode 0600. It goes with the database: a new data
	// directory on an old database cannot open what the old key sealed.
	key, made, err := secrets.EnsureKeyFile(devKeyFile(dataDir), log)
	if err != nil {
		return err
	}
	if made {
		log.Info("made a secrets key", "path", devKeyFile(dataDir), "key_id", key.ID())
	}

	host, portStr, _ := net.SplitHostPort(cfg.NATSAddr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("-nats-addr port %q: %w", portStr, err)
	}
	natsServer := natsserver.Config{Host: host, Port: port, StoreDir: filepath.Join(dataDir, "nats"), Name: "rackplane-dev"}
	// Region and rack are built as regiond and rackd build them, on the
	// embedded server: secured for the region's auth callout, where the
	// built-in rack joins with a join token like any other.
	regionNATS, rackNATS := dial.DefaultNATSConfig(), dial.DefaultNATSConfig()
	regionAuth := regiond.NATSAuthConfig{Account: natsauth.DefaultAccount}
	rackAuth := rackd.NATSAuthConfig{Insecure: cfg.InsecureNATS}
	joinTokenPath := filepath.Join(dataDir, "join-token")
	var joinToken string
	if cfg.InsecureNATS {
		log.Warn("-insecure-nats: the embedded NATS takes ANY client, without the region's auth callout: anyone reaching " + cfg.NATSAddr +
			" can publish as any rack or as the region and read every rack's traffic")
	} else {
		keysDir := filepath.Join(dataDir, "nats-auth")
		keys, err := natsserver.LoadOrCreateKeys(keysDir)
		if err != nil {
			return err
		}
		auth, err := keys.Auth(regionAuth.Account)
		if err != nil {
			return err
		}
		natsServer.Auth = &auth
		regionNATS.NKeySeedFile = filepath.Join(keysDir, natsserver.RegionSeedFile)
		regionAuth.IssuerSeedFile = filepath.Join(keysDir, natsserver.IssuerSeedFile)
		regionAuth.SystemNKeyFile = filepath.Join(keysDir, natsserver.SystemSeedFile)
		if joinToken, err = joinTokenFile(ctx, db, joinTokenPath, devJoinTokenTTL, devCreatedBy(dataDir)); err != nil {
			return err
		}
		rackAuth.JoinToken = joinToken
	}
	// What dev minted for data directories that no longer hold it (this
	// one's, when it is new) must not keep working unnoticed.
	if err := revokeStaleDevTokens(ctx, db, dataDir, token, joinToken, log); err != nil {
		return err
	}
	// Supervised: its log joins ours, and it is started again when a
	// JetStream store fails for good (as running out of file descriptors
	// makes it), which would otherwise stop every event until a restart.
	// An address another process has (a second rackplane dev, most
	// likely) is named with the flag that moves it.
	listeners := []daemon.Listener{{Flag: "nats-addr", Addr: cfg.NATSAddr}, {Flag: "http-addr", Addr: cfg.HTTPAddr},
		{Flag: "rack-http-addr", Addr: cfg.RackHTTPAddr}, {Flag: "tftp-addr", Addr: cfg.TFTPAddr}, {Flag: "pprof-addr", Addr: cfg.Profiles.Addr}}
	_, stopProfiles, err := cfg.Profiles.Start(ctx, log)
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer stopProfiles()
	ns, err := natsserver.StartSupervised(natsServer, log.With("component", "nats"))
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer ns.Shutdown()
	natsURL := ns.Server().ClientURL()
	regionNATS.URL, rackNATS.URL = natsURL, natsURL

	reg, err := regiond.New(cfg.region(dataDir), regionNATS, regionAuth, pool, log.With("component", "region"))
	if err != nil {
		return daemon.ExplainListen(err, listeners...)
	}
	defer reg.Close()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return reg.Run(gctx) })
	g.Go(func() error { return ns.Run(gctx) })
	// The built-in rack connects once the region's callout answers: the
	// server would hold it until then, and it would log a timeout.
	for deadline := time.Now().Add(30 * time.Second); !reg.NATSAuthReady() && time.Now().Before(deadline) && gctx.Err() == nil; {
		time.Sleep(20 * time.Millisecond)
	}
	kcfg := cfg.rack(dataDir)
	rk, err := rackd.New(gctx, kcfg, rackNATS, rackAuth, log.With("component", "rack"))
	if err != nil {
		stop()
		_ = g.Wait()
		return daemon.ExplainListen(err, listeners...)
	}
	defer rk.Close()

	fmt.Fprintf(stdout, `Rackplane dev is running. Ctrl-C stops it.

  API token      %s  (also in %s)
  web API        http://%s/api/v1/racks
  web UI         http://%s/#token=%s  (signs this browser tab in)
  metrics        http://%s/metrics  (rack: http://%s/metrics)
  NATS           %s  (JetStream data in %s)
                 %s
  PostgreSQL     %s  (secrets sealed with the key in %s)
  rack           %s  id %s, data in %s
  TFTP           %s  (boot files: curl tftp://%s/<file>)
  boot URL       %s  (what machines are told)
  DHCP           %s

Join a second rack:
  %s -nats-url %s%s -data-dir /tmp/rack2 -name rack2 -http-addr 127.0.0.1:0 -tftp-addr 127.0.0.1:0

  try          curl -H "Authorization: Bearer $(cat %s)" http://%s/api/v1/racks

`, token, filepath.Join(dataDir, "token"), reg.Addr(), reg.Addr(), url.PathEscape(token), reg.Addr(), rk.HTTPAddr(), natsURL, filepath.Join(dataDir, "nats"),
		describeNATSAuth(cfg.InsecureNATS, joinToken, joinTokenPath), describeURL(dbURL), devKeyFile(dataDir),
		kcfg.Name, rk.ID(), kcfg.DataDir, strings.Join(rk.TFTPAddrs(), ","), cfg.TFTPAddr, kcfg.BootURL, describeDHCP(kcfg.DHCP),
		rackdCommand(), natsURL, joinFlag(cfg.InsecureNATS, joinTokenPath), filepath.Join(dataDir, "token"), reg.Addr())

	g.Go(func() error { return rk.Run(gctx) })
	// The rack of an earlier dev whose directory is gone (the same name,
	// another id) goes too, once the region has it offline.
	g.Go(func() error {
		retireStaleDevRacks(gctx, reg, db, kcfg.Name, rk.ID(), log)
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	fmt.Fprintln(stdout, "Rackplane dev stopped.")
	return daemon.ExplainListen(err, listeners...)
}

// runLab is `rackplane dev -vms N`: the lab runs this binary as `dev`
// inside its namespace, with the flags given here and its own.
func runLab(ctx context.Context, cfg devConfig, args []string, stdout, stderr io.Writer) error {
	var errs []error
	for _, f := range []string{"boot-interface", "dhcp-mode", "dhcp-interface", "dhcp-subnets"} {
		if cfg.set[f] {
			errs = append(errs, fmt.Errorf("-%s: -vms puts the rack on the lab's own network; leave -%s out", f, f))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		errs = append(errs, err)
	}
	lc := lab.DefaultConfig()
	lc.VMs, lc.DataDir, lc.Executable, lc.APIAddr, lc.NATSAddr = cfg.VMs, cfg.DataDir, exe, cfg.HTTPAddr, cfg.NATSAddr
	lc.DatabaseURL = dial.DatabaseURL(cfg.DatabaseURL)
	lc.Stdout, lc.Stderr = stdout, stderr
	// -vms 0 last: the dev in the namespace runs no lab of its own
	// (RACKPLANE_VMS in the environment would say otherwise).
	lc.DevArgs = append(append([]string{}, args...), "-vms", "0")
	if err := errors.Join(append(errs, lc.Validate())...); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	return lab.Run(ctx, lc)
}

// rackdCommand is how rackd runs here, for what the CLI tells to run:
// rackd on the PATH, else the rackd built beside this binary, else from
// the source tree, as the README runs everything (go run ./cmd/rackd).
func rackdCommand() string {
	if _, err := exec.LookPath("rackd"); err == nil {
		return "rackd"
	}
	if exe, err := os.Executable(); err == nil {
		sibling := filepath.Join(filepath.Dir(exe), "rackd")
		if fi, err := os.Stat(sibling); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return sibling
		}
	}
	return "go run ./cmd/rackd"
}

// describeNATSAuth says how NATS is secured, for the banner.
func describeNATSAuth(insecure bool, joinToken, joinTokenFile string) string {
	if insecure {
		return "OPEN (-insecure-nats): any client may act as any rack or as the region"
	}
	return "racks join with the join token " + joinToken + " (also in " + joinTokenFile + ")"
}

// joinFlag is what a second rack needs to join, for the banner.
func joinFlag(insecure bool, joinTokenFile string) string {
	if insecure {
		return ""
	}
	return " -join-token-file " + joinTokenFile
}

// devToken returns the bootstrap API token kept in path, making a new one
// (created by createdBy) when there is none or it no longer works (tokens
// are stored hashed, so the file is the only copy). It migrates the
// database first.
func devToken(ctx context.Context, db *postgres.DB, path, createdBy string) (string, error) {
	if err := db.Migrate(ctx); err != nil {
		return "", err
	}
	return keptSecret(path, func(tok string) (bool, error) {
		_, err := db.Authenticate(ctx, tok, time.Now())
		return err == nil, nil
	}, func() (string, error) {
		_, tok, err := db.CreateToken(ctx, "dev-bootstrap", "admin", createdBy, time.Now())
		return tok, err
	})
}

// devJoinTokenTTL is how long the join token `rackplane dev` makes lasts:
// a week of restarts; after that dev makes another.
const devJoinTokenTTL = 7 * 24 * time.Hour

// joinTokenFile returns the join token kept in path, making a new one
// valid for ttl when there is none or it would not admit racks for the
// next hour.
func joinTokenFile(ctx context.Context, db *postgres.DB, path string, ttl time.Duration, by string) (string, error) {
	return keptSecret(path, func(tok string) (bool, error) {
		return db.JoinTokenValid(ctx, tok, time.Now().Add(time.Hour))
	}, func() (string, error) {
		_, tok, err := db.CreateJoinToken(ctx, ttl, by, time.Now())
		return tok, err
	})
}

// keptSecret returns the secret kept in path when valid says it still
// works, else makes one with create and keeps it there (0600): the
// database keeps only hashes, so the file is the only copy.
func keptSecret(path string, valid func(string) (bool, error), create func() (string, error)) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		s := strings.TrimSpace(string(b))
		ok, err := valid(s)
		if err != nil {
			return "", err
		}
		if ok {
			return s, nil
		}
	}
	s, err := create()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep %s: %w", path, err)
	}
	return s, nil
}

// devDatabase returns the URL of the dev database, creating it when it is
// missing. With no URL it is database "rackplane" on the server libpq
// defaults point at.
func devDatabase(ctx context.Context, url string, log *slog.Logger) (string, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("database url: %w", err)
	}
	if url == "" && os.Getenv("PGDATABASE") == "" {
		cfg.Database = "rackplane"
	}
	name := cfg.Database
	admin := cfg.Copy()
	admin.Database = "postgres"
	target := dial.PostgresTarget{Host: cfg.Host, Port: cfg.Port, User: cfg.User, Database: admin.Database}
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return "", dial.ExplainPostgres(err, target)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("look up database %s: %w", name, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			target.Database = name
			return "", fmt.Errorf("create database %s: %w", name, dial.ExplainPostgres(err, target))
		}
		log.Info("created database", "name", name)
	}
	if url != "" {
		return url, nil
	}
	return connString(cfg), nil
}

func connString(cfg *pgx.ConnConfig) string {
	s := fmt.Sprintf("host=%s port=%d user=%s dbname=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database)
	if cfg.Password != "" {
		s += " password=" + cfg.Password
	}
	return s
}

func describeDHCP(c dhcp.Config) string {
	switch c.Mode {
	case dhcp.ModeProxy:
		return "proxy on " + c.Interface + " (boot information for PXE clients; the site's DHCP gives addresses)"
	case dhcp.ModeManaged:
		return fmt.Sprintf("managed on %s (%d subnets)", c.Interface, len(c.Subnets))
	}
	return "off (-boot-interface IFACE turns on proxyDHCP there)"
}

func describeURL(s string) string {
	cfg, err := pgx.ParseConfig(s)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s", cfg.Host, cfg.Port, cfg.User, cfg.Database)
}
