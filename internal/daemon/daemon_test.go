package daemon_test

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/flagenv"
)

// flagSet is a flag set with register's flags, and their names.
func flagSet(register func(*flag.FlagSet)) (*flag.FlagSet, []string) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	register(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return fs, names
}

// TestFlags: regiond and rackd have the flags they always had, each also
// read from its RACKPLANE_ variable, whichever part of the configuration
// owns it now.
func TestFlags(t *testing.T) {
	region, rack := regiond.DefaultConfig(), rackd.DefaultConfig()
	tests := []struct {
		name     string
		register func(*flag.FlagSet)
		flags    []string
		args     []string
		env      map[string]string
		check    func() bool
	}{
		{"regiond", region.RegisterFlags,
			[]string{"http-addr", "database-url", "nats-url", "nats-nkey", "nats-ca", "nats-cert", "nats-key",
				"heartbeat-misses", "stream-max-age", "nats-stream-replicas", "ingest-batch", "ingest-concurrency", "deploy-timeout", "log-level",
				"secrets-key-file", "secrets-old-key-files",
				"nats-issuer-seed", "nats-system-nkey", "nats-account", "first-join-token-file", "no-nats-callout",
				"discovery-per-rack-per-minute", "discovery-max-new", "auto-commission", "telemetry-max-age", "telemetry-keep-per-rack", "telemetry-prune-interval",
				"release-power-off", "power-retries", "power-retry-delay", "power-action-timeout", "power-poll-concurrency", "commission-timeout", "erase-timeout", "release-erase",
				"http-read-header-timeout", "http-read-timeout", "http-write-timeout", "http-idle-timeout", "http-max-header-bytes",
				"http-max-body-bytes", "http-max-conns", "pprof-addr", "pprof-allow-remote"},
			[]string{"-http-addr", "127.0.0.1:1", "-nats-ca", "ca.pem", "-nats-system-nkey", "sys.nk", "-pprof-addr", "127.0.0.1:6060"},
			map[string]string{"RACKPLANE_DATABASE_URL": "postgres://db/x", "RACKPLANE_NATS_URL": "nats://n:1",
				"RACKPLANE_NATS_NKEY": "seed", "RACKPLANE_NATS_CERT": "c.pem", "RACKPLANE_NATS_KEY": "k.pem",
				"RACKPLANE_LOG_LEVEL": "debug", "RACKPLANE_INGEST_BATCH": "7", "RACKPLANE_NATS_STREAM_REPLICAS": "3",
				"RACKPLANE_SECRETS_KEY_FILE": "/etc/rackplane/secrets.key", "RACKPLANE_SECRETS_OLD_KEY_FILES": "/a.key, /b.key",
				"RACKPLANE_NATS_ISSUER_SEED": "issuer.nk", "RACKPLANE_FIRST_JOIN_TOKEN_FILE": "jt", "RACKPLANE_HTTP_MAX_CONNS": "100"},
			func() bool {
				return region.Region.HTTPAddr == "127.0.0.1:1" && region.Postgres.URL == "postgres://db/x" &&
					region.NATS.URL == "nats://n:1" && region.NATS.NKeySeedFile == "seed" && region.NATS.CAFile == "ca.pem" &&
					region.NATS.CertFile == "c.pem" && region.NATS.KeyFile == "k.pem" && region.Log.Level == "debug" &&
					region.Region.IngestBatch == 7 && region.Region.StreamReplicas == 3 &&
					region.Region.Secrets.KeyFile == "/etc/rackplane/secrets.key" && slices.Equal(region.Region.Secrets.OldKeyFiles, []string{"/a.key", "/b.key"}) &&
					region.NATSAuth.IssuerSeedFile == "issuer.nk" && region.NATSAuth.SystemNKeyFile == "sys.nk" &&
					region.NATSAuth.FirstJoinTokenFile == "jt" && region.NATSAuth.Account == "RACKPLANE" && !region.Region.NoNATSCallout &&
					region.Region.HTTP.MaxConns == 100 && region.Profiles.Addr == "127.0.0.1:6060" && !region.Profiles.AllowRemote
			}},
		{"rackd", rack.RegisterFlags,
			[]string{"data-dir", "name", "nats-url", "nats-nkey", "nats-ca", "nats-cert", "nats-key", "http-addr",
				"heartbeat-interval", "event-buffer", "event-journal-max-bytes", "event-flush-timeout", "log-level", "import-system-bootloaders", "scrub-at-start",
				"keep-image-versions", "in-flight-window", "storage-search-path", "tftp-addr", "tftp-window", "boot-url",
				"boot-root", "preseed-dir", "boot-files-over-http", "unknown-wait", "offload-socket", "storage-timeout",
				"power-search-path", "power-timeout", "power-concurrency", "power-poll-interval",
				"dhcp-mode", "dhcp-interface", "dhcp-server-ip", "dhcp-http-url", "dhcp-bios-loader", "dhcp-uefi-loader",
				"dhcp-arm64-loader", "dhcp-proxy-peers", "dhcp-proxy-takeover", "dhcp-event-interval", "dhcp-subnets",
				"join-token", "join-token-file", "insecure-nats",
				"boot-events-rate", "boot-events-burst", "boot-events-per-source-rate", "boot-events-per-source-burst",
				"boot-events-sources", "boot-events-summary-interval",
				"http-read-header-timeout", "http-read-timeout", "http-write-timeout", "http-idle-timeout", "http-max-header-bytes",
				"http-max-body-bytes", "http-max-conns", "pprof-addr", "pprof-allow-remote"},
			[]string{"-name", "r1", "-nats-key", "k.pem", "-http-write-timeout", "1m", "-power-timeout", "45s"},
			map[string]string{"RACKPLANE_NATS_URL": "nats://n:2", "RACKPLANE_NATS_CERT": "c.pem",
				"RACKPLANE_LOG_LEVEL": "warn", "RACKPLANE_HEARTBEAT_INTERVAL": "3s", "RACKPLANE_NAME": "not-this",
				"RACKPLANE_JOIN_TOKEN_FILE": "/run/join-token", "RACKPLANE_POWER_SEARCH_PATH": "/opt/power, /etc/power",
				"RACKPLANE_POWER_CONCURRENCY": "7", "RACKPLANE_PPROF_ADDR": "10.0.0.1:6060", "RACKPLANE_PPROF_ALLOW_REMOTE": "true"},
			func() bool {
				return rack.Rack.Name == "r1" && rack.NATS.URL == "nats://n:2" && rack.NATS.CertFile == "c.pem" &&
					rack.NATS.KeyFile == "k.pem" && rack.Log.Level == "warn" && rack.Rack.HeartbeatInterval == 3*time.Second &&
					rack.NATSAuth.JoinTokenFile == "/run/join-token" && !rack.NATSAuth.Insecure &&
					rack.Rack.HTTP.WriteTimeout == time.Minute && rack.Rack.Power.Timeout == 45*time.Second &&
					rack.Rack.Power.Concurrency == 7 && slices.Equal(rack.Rack.Power.SearchPath, []string{"/opt/power", "/etc/power"}) &&
					rack.Profiles.Addr == "10.0.0.1:6060" && rack.Profiles.AllowRemote
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, names := flagSet(tt.register)
			slices.Sort(names)
			slices.Sort(tt.flags)
			if !slices.Equal(names, tt.flags) {
				t.Errorf("flags %v, want %v", names, tt.flags)
			}
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if err := flagenv.Parse(fs, tt.args, lookup); err != nil {
				t.Fatal(err)
			}
			if !tt.check() {
				t.Errorf("flags %v and environment %v were not all taken: region %+v, rack %+v", tt.args, tt.env, region, rack)
			}
		})
	}
}

// TestValidateNamesEveryBadSetting: one Validate names every bad setting,
// of the component, of NATS, of PostgreSQL and of logging; rackd's
// defaults pass, and regiond's ask for the NATS auth callout's keys
// (secure by default) or -no-nats-callout, which its tools do not need.
func TestValidateNamesEveryBadSetting(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	if err := rackd.DefaultConfig().Validate(); err != nil {
		t.Errorf("rackd's defaults: %v", err)
	}
	dflt := regiond.DefaultConfig()
	if err := dflt.Validate(); err == nil || !strings.Contains(err.Error(), "-nats-issuer-seed is empty") ||
		!strings.Contains(err.Error(), "-nats-system-nkey is empty") || strings.Count(err.Error(), "\n") != 1 {
		t.Errorf("regiond's defaults: %v; want the callout's two keys asked for", err)
	}
	if err := dflt.ValidateTools(); err != nil {
		t.Errorf("regiond's defaults for its tools: %v", err)
	}
	dflt.Region.NoNATSCallout = true
	if err := dflt.Validate(); err != nil {
		t.Errorf("regiond's defaults with -no-nats-callout: %v", err)
	}
	dflt.NATSAuth.IssuerSeedFile = "issuer.nk"
	if err := dflt.Validate(); err == nil || !strings.Contains(err.Error(), "-no-nats-callout runs without") {
		t.Errorf("-no-nats-callout with -nats-issuer-seed: %v", err)
	}

	region := regiond.DefaultConfig()
	region.Region.HTTPAddr, region.Region.HeartbeatMisses, region.Region.IngestBatch = "no-port", 0, 0
	region.Region.StreamReplicas = 6
	region.NATS.URL, region.NATS.CertFile = "", "c.pem"
	region.Postgres.URL = "postgres://db:notaport/x"
	region.Log.Level = "loud"
	region.NATSAuth.IssuerSeedFile, region.NATSAuth.SystemNKeyFile, region.NATSAuth.Account = "i.nk", "s.nk", ""
	rack := rackd.DefaultConfig()
	rack.Rack.Name, rack.Rack.DataDir, rack.Rack.TFTPWindow = "", "", 0
	rack.Rack.Power.Concurrency = 0
	rack.NATS.KeyFile = "k.pem"
	rack.Log.Level = "quiet"
	rack.NATSAuth = rackd.NATSAuthConfig{JoinToken: "rpj_x", JoinTokenFile: "f", Insecure: true}
	rack.Profiles.Addr = ":6060"
	tests := []struct {
		name string
		err  error
		want []string
	}{
		{"regiond", region.Validate(), []string{`-http-addr "no-port"`, "-heartbeat-misses 0", "-ingest-batch 0", "-nats-stream-replicas 6",
			"-nats-url is empty", "-nats-cert and -nats-key", "-database-url", `-log-level "loud"`, "-nats-account is empty"}},
		{"rackd", rack.Validate(), []string{"-name is empty", "-data-dir is empty", "-tftp-window 0",
			"-nats-cert and -nats-key", `-log-level "quiet"`, "-join-token and -join-token-file", "-insecure-nats connects without credentials",
			"-power-concurrency 0", `-pprof-addr ":6060" is not a loopback address`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(tt.err.Error(), w) {
					t.Errorf("%q missing from:\n%v", w, tt.err)
				}
			}
			if n := strings.Count(tt.err.Error(), "\n") + 1; n != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", n, len(tt.want), tt.err)
			}
		})
	}
	if rack.Rack.Name != "" {
		t.Errorf("Validate gave the rack the name %q", rack.Rack.Name)
	}
}
