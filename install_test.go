package rackplane_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/flagenv"
	"github.com/rackplane/rackplane/rack"
)

// The files of a production install, checked here: what the README's
// "Production install" gives an operator to run as written.

// composeService is what these tests read of a service in `docker compose
// config --format json`: the file as compose understands it, anchors
// merged and variables put in.
type composeService struct {
	Image       string             `json:"image"`
	Command     []string           `json:"command"`
	Restart     string             `json:"restart"`
	NetworkMode string             `json:"network_mode"`
	CapAdd      []string           `json:"cap_add"`
	CapDrop     []string           `json:"cap_drop"`
	Environment map[string]*string `json:"environment"`
	Ports       []struct {
		HostIP    string `json:"host_ip"`
		Target    int    `json:"target"`
		Published string `json:"published"`
	} `json:"ports"`
	Healthcheck *struct {
		Test    []string `json:"test"`
		Disable bool     `json:"disable"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
}

func (s composeService) env(k string) (string, bool) {
	v, ok := s.Environment[k]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

// oneShot: a service that runs to its end (nats-init, secrets-key):
// others wait for it to have completed, not to be healthy.
func (s composeService) oneShot() bool { return s.Restart == "" || s.Restart == "no" }

// runs: the service runs daemon (not one of its tools, such as regiond
// secrets generate, which runs once).
func (s composeService) runs(daemon string) bool {
	return len(s.Command) > 0 && s.Command[0] == daemon && !s.oneShot()
}

// composeConfig is docker-compose.yml with every profile, as `docker
// compose config` makes it with only the variables of env set (none of
// the caller's RACKPLANE_ or COMPOSE_ variables, no .env file).
func composeConfig(t *testing.T, env map[string]string) map[string]composeService {
	t.Helper()
	// As for every tool: -short skips without it, a full run fails and
	// says what to install.
	missing := t.Fatal
	if testing.Short() {
		missing = t.Skip
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		missing("docker-compose.yml is checked by `docker compose config`, and there is no docker CLI: install it " +
			"(docker.io, or Docker's docker-ce-cli) with the compose plugin (.ci/run builds the plugin); no Docker engine is needed")
	}
	empty := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(docker, "compose", "--env-file", empty, "--profile", "cluster", "config", "--format", "json")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RACKPLANE_") && !strings.HasPrefix(kv, "COMPOSE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "is not a docker command") {
			missing("docker has no compose plugin: .ci/run builds it into ~/.docker/cli-plugins\n" + stderr.String())
		}
		t.Fatalf("docker compose config: %v\n%s", err, stderr.String())
	}
	var cfg struct{ Services map[string]composeService }
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatalf("docker compose config: %v", err)
	}
	return cfg.Services
}

// TestComposeStack: docker-compose.yml runs as written and exposes
// nothing by accident. Every port is published on a chosen address
// (loopback by default), NATS never on all of them; every service that
// keeps running has a health check and is waited for healthy; NATS takes
// no client without TLS and the region's callout; the rack is on the
// host's network with only its two capabilities and a boot URL that
// stops it, saying what to set, until the operator gives the real one,
// which then gets through; the first token's command is the README's.
func TestComposeStack(t *testing.T) {
	services := composeConfig(t, nil)
	names := slices.Sorted(maps.Keys(services))
	for _, want := range []string{"postgres", "nats", "nats-init", "regiond", "rackd", "nats-1", "regiond-a", "cluster-rack1"} {
		if _, ok := services[want]; !ok {
			t.Fatalf("no service %s in %v", want, names)
		}
	}

	t.Run("ports bound on purpose", func(t *testing.T) {
		for _, n := range names {
			for _, p := range services[n].Ports {
				ip, err := netip.ParseAddr(p.HostIP)
				if err != nil || ip.IsUnspecified() {
					t.Errorf("%s publishes %s (port %d) on every address of the host (host_ip %q): bind an address on purpose, 127.0.0.1 by default",
						n, p.Published, p.Target, p.HostIP)
					continue
				}
				if !ip.IsLoopback() {
					t.Errorf("%s publishes port %d on %s by default; want loopback unless the operator says otherwise", n, p.Target, ip)
				}
			}
		}
		if p := services["regiond"].Ports; len(p) != 1 || p[0].HostIP != "127.0.0.1" || p[0].Target != 5240 {
			t.Errorf("regiond's ports %+v; want the API on 127.0.0.1:5240", p)
		}
		if p := services["nats"].Ports; len(p) != 1 || p[0].HostIP != "127.0.0.1" || p[0].Target != 4222 {
			t.Errorf("nats's ports %+v; want 4222 on 127.0.0.1 only (the rack on the host's network connects there)", p)
		}
	})

	t.Run("health", func(t *testing.T) {
		for _, n := range names {
			s := services[n]
			if !s.oneShot() && (s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] == "NONE") {
				t.Errorf("%s keeps running but has no health check", n)
			}
			for dep, d := range s.DependsOn {
				want := "service_healthy"
				if services[dep].oneShot() {
					want = "service_completed_successfully"
				}
				if d.Condition != want {
					t.Errorf("%s waits for %s to be %s; want %s", n, dep, d.Condition, want)
				}
			}
		}
		for _, n := range names {
			s := services[n]
			if (s.runs("regiond") || s.runs("rackd")) && !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "/healthz") {
				t.Errorf("%s's health check %q does not ask its /healthz", n, s.Healthcheck.Test)
			}
		}
	})

	t.Run("NATS secured", func(t *testing.T) {
		for _, n := range names {
			s := services[n]
			switch {
			case strings.HasPrefix(s.Image, "nats:"):
				cmd := strings.Join(s.Command, " ")
				if !regexp.MustCompile(`^-c /nats-conf/(nats|cluster)\.conf `).MatchString(cmd) || strings.Contains(cmd, "--no_auth") ||
					strings.Contains(cmd, "--user") || strings.Contains(cmd, "--auth") || strings.Contains(cmd, "nats://0.0.0.0:6222") {
					t.Errorf("%s runs %q; want nats-init's configuration (TLS, the region's callout, routes with a password) and nothing that opens it", n, cmd)
				}
			case s.runs("regiond"):
				for _, k := range []string{"RACKPLANE_NATS_CA", "RACKPLANE_NATS_NKEY", "RACKPLANE_NATS_SYSTEM_NKEY", "RACKPLANE_NATS_ISSUER_SEED"} {
					if v, ok := s.env(k); !ok || v == "" {
						t.Errorf("%s has no %s", n, k)
					}
				}
			case s.runs("rackd"):
				if v, _ := s.env("RACKPLANE_NATS_CA"); v == "" {
					t.Errorf("%s has no RACKPLANE_NATS_CA", n)
				}
				if v, _ := s.env("RACKPLANE_JOIN_TOKEN_FILE"); v == "" {
					t.Errorf("%s has no RACKPLANE_JOIN_TOKEN_FILE", n)
				}
			}
			if s.runs("regiond") || s.runs("rackd") {
				for _, u := range strings.Split(must(s.env("RACKPLANE_NATS_URL")), ",") {
					if !strings.HasPrefix(u, "tls://") {
						t.Errorf("%s connects to NATS at %q; want tls://", n, u)
					}
				}
				for _, k := range []string{"RACKPLANE_NO_NATS_CALLOUT", "RACKPLANE_INSECURE_NATS"} {
					if _, ok := s.env(k); ok {
						t.Errorf("%s sets %s", n, k)
					}
				}
			}
		}
	})

	t.Run("rack", func(t *testing.T) {
		r := services["rackd"]
		if r.NetworkMode != "host" {
			t.Errorf("rackd's network_mode %q; want host: DHCP broadcasts and TFTP's transfer ports need the provisioning network itself", r.NetworkMode)
		}
		if !slices.Equal(r.CapDrop, []string{"ALL"}) || !slices.Equal(slices.Sorted(slices.Values(r.CapAdd)), []string{"NET_BIND_SERVICE", "NET_RAW"}) {
			t.Errorf("rackd drops %v and adds %v; want ALL dropped, NET_BIND_SERVICE and NET_RAW added", r.CapDrop, r.CapAdd)
		}
		if u, _ := r.env("RACKPLANE_NATS_URL"); u != "tls://127.0.0.1:4222" {
			t.Errorf("rackd connects to %q; want NATS where it is published, tls://127.0.0.1:4222", u)
		}
		for _, n := range names {
			s := services[n]
			if !s.runs("rackd") {
				continue
			}
			u, ok := s.env("RACKPLANE_BOOT_URL")
			if !ok {
				t.Errorf("%s has no RACKPLANE_BOOT_URL: machines would be told the container's address", n)
				continue
			}
			err := rack.CheckBootURL(u)
			switch {
			case n == "rackd" && u != rack.PlaceholderBootURL:
				t.Errorf("rackd's boot URL %q by default; want the placeholder %q, which the operator must replace", u, rack.PlaceholderBootURL)
			case n == "rackd" && (err == nil || !strings.Contains(err.Error(), "set -boot-url (RACKPLANE_BOOT_URL)")):
				t.Errorf("rackd starts with the placeholder boot URL (%v); want it refused, naming RACKPLANE_BOOT_URL", err)
			case n != "rackd" && err != nil:
				t.Errorf("%s: %v", n, err)
			}
		}
	})

	t.Run("the operator's settings get through", func(t *testing.T) {
		set := composeConfig(t, map[string]string{
			"RACKPLANE_BOOT_URL": "http://10.20.0.2:5248", "RACKPLANE_NATS_BIND": "10.0.0.5",
			"RACKPLANE_NATS_TLS_HOSTS": "nats.example.net,10.0.0.6", "RACKPLANE_API_BIND": "10.0.0.5",
			"RACKPLANE_DHCP_MODE": "proxy", "RACKPLANE_DHCP_INTERFACE": "eth1",
		})
		r := set["rackd"]
		if u, _ := r.env("RACKPLANE_BOOT_URL"); u != "http://10.20.0.2:5248" || rack.CheckBootURL(u) != nil {
			t.Errorf("rackd's boot URL %q; want the operator's", u)
		}
		if u, _ := r.env("RACKPLANE_NATS_URL"); u != "tls://10.0.0.5:4222" {
			t.Errorf("rackd connects to %q; want NATS where it is published now, tls://10.0.0.5:4222", u)
		}
		if m, _ := r.env("RACKPLANE_DHCP_MODE"); m != "proxy" {
			t.Errorf("rackd's DHCP mode %q; want proxy", m)
		}
		if p := set["nats"].Ports; len(p) != 1 || p[0].HostIP != "10.0.0.5" {
			t.Errorf("nats's ports %+v; want 4222 on 10.0.0.5", p)
		}
		if p := set["regiond"].Ports; len(p) != 1 || p[0].HostIP != "10.0.0.5" {
			t.Errorf("regiond's ports %+v; want 5240 on 10.0.0.5", p)
		}
		hosts := strings.Split(must(set["nats-init"].env("RACKPLANE_TLS_HOSTS")), ",")
		for _, h := range []string{"nats", "localhost", "127.0.0.1", "10.0.0.5", "nats.example.net", "10.0.0.6"} {
			if !slices.Contains(hosts, h) {
				t.Errorf("NATS's certificate names %v; want %s among them", hosts, h)
			}
		}
	})

	t.Run("first token", func(t *testing.T) {
		const cmd = `docker compose exec -T regiond regiond token create admin "$USER"`
		for _, f := range []string{"docker-compose.yml", "README.md"} {
			if b, err := os.ReadFile(f); err != nil || !bytes.Contains(b, []byte(cmd)) {
				t.Errorf("%s does not give the first token's command %s (%v)", f, cmd, err)
			}
		}
	})
}

func must(s string, _ bool) string { return s }

// TestDockerBuildContext: .dockerignore keeps the history and `rackplane
// dev`'s data (tokens, keys, images) out of the image's build, and
// nothing the Dockerfile's build needs: go.mod, go.sum and every file of
// the packages it builds, the files they embed included. The image's
// rackd has its capabilities and the boot URL placeholder.
func TestDockerBuildContext(t *testing.T) {
	ignore, err := readDockerignore(".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".git", ".git/config", ".rackplane", ".rackplane/token", ".rackplane/rack/images/x",
		"internal/e2e/testdata/noderack/node_modules/nats/index.js", "region/region.test", ".env"} {
		if !ignore.excludes(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}

	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	build := regexp.MustCompile(`(?m)go build .*\\\n.*\\\n\s*-o /out/ (.*)$`).FindSubmatch(dockerfile)
	if build == nil {
		t.Fatal("no go build in the Dockerfile")
	}
	pkgs := strings.Fields(string(build[1]))
	if !slices.Equal(pkgs, []string{"./cmd/regiond", "./cmd/rackd", "./cmd/rackplane"}) {
		t.Errorf("the Dockerfile builds %v", pkgs)
	}
	needed := []string{"go.mod", "go.sum"}
	list := exec.Command("go", append([]string{"list", "-deps", "-f",
		`{{if not .Standard}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}`}, pkgs...)...)
	list.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(root, f[0])
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // the module cache
		}
		for _, name := range f[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, name)))
		}
	}
	if len(needed) < 100 {
		t.Fatalf("go list gave %d files of this module; want the packages of regiond, rackd and rackplane", len(needed))
	}
	for _, p := range needed {
		if ignore.excludes(p) {
			t.Errorf(".dockerignore leaves out %s, which the Dockerfile's build needs", p)
		}
	}

	for _, want := range []string{
		"RUN setcap cap_net_bind_service,cap_net_raw+ep /usr/local/bin/rackd",
		"ENV RACKPLANE_BOOT_URL=" + rack.PlaceholderBootURL,
		"USER rackplane",
	} {
		if !bytes.Contains(dockerfile, []byte(want+"\n")) {
			t.Errorf("the Dockerfile has no %q", want)
		}
	}
}

// dockerignore is a .dockerignore's rules, matched as Docker matches
// them: the last rule matching a path or one of its parent directories
// decides; "**" is any number of directories, "*" and "?" stay within one.
type dockerignore []struct {
	re     *regexp.Regexp
	negate bool
}

func readDockerignore(path string) (dockerignore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rules dockerignore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		negate := strings.HasPrefix(line, "!")
		line = strings.TrimPrefix(filepath.Clean(strings.TrimPrefix(line, "!")), "/")
		if strings.ContainsAny(line, `[\`) {
			return nil, errors.New(".dockerignore: " + line + ": character classes and escapes are not understood by this test")
		}
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(line); i++ {
			switch {
			case strings.HasPrefix(line[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(line[i:], "**"):
				re.WriteString(".*")
				i++
			case line[i] == '*':
				re.WriteString("[^/]*")
			case line[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(line[i : i+1]))
			}
		}
		re.WriteString("$")
		rules = append(rules, struct {
			re     *regexp.Regexp
			negate bool
		}{regexp.MustCompile(re.String()), negate})
	}
	return rules, sc.Err()
}

func (d dockerignore) excludes(path string) bool {
	excluded := false
	for _, r := range d {
		for p := path; p != "."; p = filepath.Dir(p) {
			if r.re.MatchString(p) {
				excluded = !r.negate
				break
			}
		}
	}
	return excluded
}

// unit is a systemd unit file: each section's keys with their values in
// order (a key may be given more than once).
type unit map[string]map[string][]string

func readUnit(path string) (unit, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	u, section := unit{}, ""
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				return nil, errors.New(path + ":" + strconv.Itoa(n+1) + ": not a key=value line of a section")
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u, nil
}

// environment is what the unit gives the daemon: its Environment= lines
// (credentials under /run/credentials/<unit>) and its EnvironmentFile=,
// read from docs/systemd/ where the README has it copied from.
func (u unit) environment(t *testing.T, name string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = strings.ReplaceAll(strings.ReplaceAll(v, "%d", "/run/credentials/"+name), "%S", "/var/lib")
		}
	}
	for _, f := range u["Service"]["EnvironmentFile"] {
		b, err := os.ReadFile(filepath.Join("docs/systemd", filepath.Base(f)))
		if err != nil {
			t.Fatalf("%s: EnvironmentFile=%s: %v", name, f, err)
		}
		for line := range strings.Lines(string(b)) {
			if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
				k, v, _ := strings.Cut(line, "=")
				env[k] = v
			}
		}
	}
	return env
}

// TestSystemdUnits: the units of docs/systemd are what the README says:
// each restarts on failure, reads its settings from /etc/rackplane, runs
// as a user of its own with nothing it does not need (rackd with its two
// capabilities, the others with none), and gives regiond and rackd
// settings they accept, every variable the name of a flag. systemd's own
// checks (systemd-analyze verify, and security at an exposure of 3.0 or
// less) run where systemd-analyze is installed.
func TestSystemdUnits(t *testing.T) {
	tests := []struct {
		file string
		exec string
		caps string // CapabilityBoundingSet and AmbientCapabilities
		env  string // EnvironmentFile; with it, DynamicUser
	}{
		{file: "regiond.service", exec: "/usr/local/bin/regiond", caps: "", env: "/etc/rackplane/regiond.env"},
		{file: "rackd.service", exec: "/usr/local/bin/rackd", caps: "CAP_NET_BIND_SERVICE CAP_NET_RAW", env: "/etc/rackplane/rackd.env"},
		{file: "rackplane-nats.service", exec: "/usr/local/bin/nats-server", caps: ""},
	}
	region, rk := regiond.DefaultConfig(), rackd.DefaultConfig()
	daemons := map[string]struct {
		register func(*flag.FlagSet)
		validate func() error
	}{
		"regiond.service": {region.RegisterFlags, func() error { return region.Validate() }},
		"rackd.service":   {rk.RegisterFlags, func() error { return rk.Validate() }},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			u, err := readUnit(filepath.Join("docs/systemd", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			s := u["Service"]
			one := func(k string) string {
				if len(s[k]) != 1 {
					return strings.Join(s[k], " | ")
				}
				return s[k][0]
			}
			if f := strings.Fields(one("ExecStart")); len(f) == 0 || f[0] != tt.exec {
				t.Errorf("ExecStart=%s; want %s", one("ExecStart"), tt.exec)
			}
			checks := map[string]string{
				"Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
				"CapabilityBoundingSet": tt.caps, "AmbientCapabilities": tt.caps,
			}
			if tt.env != "" {
				checks["EnvironmentFile"] = tt.env
				checks["DynamicUser"] = "yes"
			} else if one("User") == "" {
				t.Error("no User=")
			}
			for k, want := range checks {
				if got := one(k); got != want {
					t.Errorf("%s=%s; want %s", k, got, want)
				}
			}
			if got := strings.Join(u["Install"]["WantedBy"], " "); got != "multi-user.target" {
				t.Errorf("WantedBy=%s; want multi-user.target", got)
			}
			d, ok := daemons[tt.file]
			if !ok {
				return
			}
			fs := flag.NewFlagSet(tt.file, flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			d.register(fs)
			env := u.environment(t, tt.file)
			for k := range env {
				if k != "DATABASE_URL" && fs.Lookup(strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, "RACKPLANE_"), "_", "-"))) == nil {
					t.Errorf("%s is no flag of %s", k, strings.TrimSuffix(tt.file, ".service"))
				}
			}
			if v, ok := env["DATABASE_URL"]; ok {
				env[flagenv.EnvName("database-url")] = v
			}
			if err := flagenv.Parse(fs, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
				t.Fatal(err)
			}
			if err := d.validate(); err != nil {
				t.Errorf("%s does not start with the unit's settings:\n%v", tt.file, err)
			}
		})
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("no systemd-analyze: the units' keys are checked above, not by systemd")
		return
	}
	// systemd checks that ExecStart's program is there: these stand in.
	dir, bin := t.TempDir(), t.TempDir()
	for _, p := range []string{"regiond", "rackd", "nats-server"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	services, _ := filepath.Glob("docs/systemd/*.service")
	timers, _ := filepath.Glob("docs/systemd/*.timer")
	files := append(services, timers...)
	if len(files) < 5 {
		t.Fatalf("docs/systemd has %v", files)
	}
	var units []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(to, bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(bin+"/")), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, to)
	}
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, name := range []string{"regiond.service", "rackd.service", "rackplane-nats.service"} {
		// The threshold is in tenths of the exposure level shown: 30 is 3.0.
		out, err := exec.Command(analyze, "security", "--offline=true", "--threshold=30", filepath.Join(dir, name)).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", name, err, tail(out))
		}
	}
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-3):], "\n")
}
