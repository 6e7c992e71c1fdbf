package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestCLIMessagesSayWhatToFix: what a new user got wrong with the CLI is
// answered with what to do instead, in the words they would search for:
// where a token comes from, the form of -api, a rack or machine by name
// (and which ids when a name is shared), a flag machine create needs, a
// relative image directory, the command that starts a rack, an address
// another dev has.
func TestCLIMessagesSayWhatToFix(t *testing.T) {
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	// A second rack of the same name makes the name ambiguous.
	cfg := rack.DefaultConfig()
	cfg.Name, cfg.HTTPAddr, cfg.TFTPAddrs = "twin", "127.0.0.1:0", nil
	cfg.ImportSystemBootloaders = false
	for i := range 2 {
		cfg.DataDir = filepath.Join(t.TempDir(), fmt.Sprintf("twin%d", i))
		nc := dial.DefaultNATSConfig()
		nc.URL = "nats://" + d.nat
		rk, err := rackd.New(context.Background(), cfg, nc, rackd.NATSAuthConfig{JoinTokenFile: filepath.Join(d.dataDir, "join-token")}, regiontest.Logger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rk.Close)
		regiontest.Run(t, rk.Run)
	}
	regiontest.Eventually(t, 30*time.Second, "the twins known", func() error {
		out, _ := d.rackplane([]string{"racks"})
		if strings.Count(out, " twin ") != 2 {
			return fmt.Errorf("racks:\n%s", out)
		}
		return nil
	})
	hostPort := strings.TrimPrefix(d.api, "http://")
	closed := freeLoopback(t)
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tok := d.token()
	tests := []struct {
		name string
		args []string
		ok   bool
		want []string
	}{
		{"no token anywhere", []string{"racks", "-api", d.api}, false, []string{"the region wants an API token and none was given",
			"the flag -token TOKEN", "the environment variable RACKPLANE_TOKEN=TOKEN", "the file .rackplane/token (looked for at " + filepath.Join(cwd, ".rackplane/token")}},
		{"a refused token", []string{"racks", "-api", d.api, "-token", "rp_nosuch"}, false,
			[]string{"the token from -token or RACKPLANE_TOKEN was refused"}},
		{"-api as host:port", []string{"racks", "-api", hostPort, "-token", tok}, true, []string{"dev-rack", "online"}},
		{"-api not a URL", []string{"racks", "-api", "ftp://" + hostPort, "-token", tok}, false,
			[]string{`-api "ftp://` + hostPort + `": want the region's URL, such as http://127.0.0.1:5240 (or its host:port)`}},
		{"no region there", []string{"racks", "-api", closed, "-token", tok}, false,
			[]string{"nothing answers at http://" + closed + ": start the region (go run ./cmd/rackplane dev, or regiond), or give its address with -api or RACKPLANE_API"}},
		{"a rack by name", []string{"rack", "dev-rack", "-api", d.api, "-token", tok}, true, []string{`"name": "dev-rack"`}},
		{"an unknown rack name", []string{"rack", "nosuch", "-api", d.api, "-token", tok}, false,
			[]string{`no rack named "nosuch"; the racks are dev-rack, twin (give a name or an id)`}},
		{"a rack name two racks have", []string{"rack", "twin", "-api", d.api, "-token", tok}, false,
			[]string{`2 racks are named "twin"; give the id of the one you mean: `, " (online); "}},
		{"subnets of a rack by name", []string{"subnets", "-rack", "dev-rack", "-api", d.api, "-token", tok}, true, []string{"ID  RACK  CIDR"}},
		{"a subnet's rack by name", []string{"subnet", "create", "-rack", "dev-rack", "-cidr", "10.78.0.0/24", "-api", d.api, "-token", tok}, true,
			[]string{`"cidr": "10.78.0.0/24"`}},
		{"leases of a subnet by CIDR", []string{"leases", "-subnet", "10.78.0.0/24", "-rack", "dev-rack", "-api", d.api, "-token", tok}, true,
			[]string{"IP  MAC  MACHINE  HOSTNAME  RACK"}},
		{"leases of a CIDR no subnet has", []string{"leases", "-subnet", "10.79.0.0/24", "-api", d.api, "-token", tok}, true,
			[]string{"IP  MAC  MACHINE  HOSTNAME  RACK"}},
		{"leases of a subnet id that is not one", []string{"leases", "-subnet", "nosuch", "-api", d.api, "-token", tok}, false,
			[]string{`subnet "nosuch": want a subnet's id`}},
		{"leases with an argument", []string{"leases", "10.78.0.0/24", "-api", d.api, "-token", tok}, false,
			[]string{`leases takes no arguments, only flags (-rack, -subnet, -mac): got ["10.78.0.0/24"]`}},
		{"machine create without -mac", []string{"machine", "create", "-hostname", "n5", "-api", d.api, "-token", tok}, false,
			[]string{"machine create needs -mac MAC[,MAC...] (its MAC addresses, such as 52:54:00:12:34:56"}},
		{"machine create with -mac", []string{"machine", "create", "-hostname", "n5", "-mac", "52:54:00:00:30:05", "-api", d.api, "-token", tok}, true, nil},
		{"a machine by host name", []string{"machine", "update", "n5", "-arch", "arm64", "-api", d.api, "-token", tok}, true, nil},
		{"an unknown host name", []string{"machine", "update", "nosuch", "-arch", "arm64", "-api", d.api, "-token", tok}, false,
			[]string{`no machine with the host name "nosuch" (rackplane machines lists them; give a host name or an id)`}},
		{"a relative image directory", []string{"images", "import", "dev-rack", "no/such/dir", "-api", d.api, "-token", tok}, false,
			[]string{`the directory "no/such/dir" is read on the rack: sending it as ` + filepath.Join(cwd, "no/such/dir") + " (relative to this directory)"}},
	}
	t.Setenv("RACKPLANE_TOKEN", "")
	t.Setenv("RACKPLANE_API", "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			all := out.String() + errOut.String()
			if err != nil {
				all += err.Error()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok %v:\n%s", err, tt.ok, all)
			}
			for _, w := range tt.want {
				if !strings.Contains(all, w) {
					t.Errorf("%q missing from:\n%s", w, all)
				}
			}
		})
	}

	// The banner's way to join a second rack is a command that runs here.
	if want := rackdCommand() + " -nats-url nats://" + d.nat + " -join-token-file"; !strings.Contains(d.out(), want) {
		t.Errorf("the banner does not say %q:\n%s", want, d.out())
	}
	if c := rackdCommand(); c != "go run ./cmd/rackd" && c != "rackd" && !strings.HasSuffix(c, "/rackd") {
		t.Errorf("rackdCommand() = %q, want rackd on the PATH or beside this binary, or go run ./cmd/rackd", c)
	}

	// A second rackplane dev is told which address the first one has.
	for _, tt := range []struct{ flag, args, want string }{
		{"nats-addr", "-nats-addr " + d.nat + " -http-addr " + freeLoopback(t), d.nat + " (-nats-addr) is in use by another process"},
		{"http-addr", "-nats-addr " + freeLoopback(t) + " -http-addr " + hostPort, hostPort + " (-http-addr) is in use by another process"},
	} {
		t.Run("second dev, "+tt.flag, func(t *testing.T) {
			args := append(strings.Fields(tt.args), "-data-dir", filepath.Join(t.TempDir(), "dev"), "-database-url", pgtest.NewDatabase(t),
				"-rack-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-log-level", "error")
			start := time.Now()
			err := runDev(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "give -"+tt.flag+" another address") {
				t.Fatalf("%v; want %q", err, tt.want)
			}
			if took := time.Since(start); took > 8*time.Second {
				t.Errorf("took %s to say so", took)
			}
		})
	}
}
