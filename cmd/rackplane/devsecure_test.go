package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region/regiontest"
)

// devSystem is `rackplane dev` run in the test's process.
type devSystem struct {
	t                 *testing.T
	dataDir, api, nat string
	stdout            *os.File
	// stop stops dev as Ctrl-C does and waits for it (once; cleanup
	// calls it too).
	stop func()
}

// out is what dev printed so far.
func (d *devSystem) out() string {
	b, err := os.ReadFile(d.stdout.Name())
	if err != nil {
		d.t.Fatal(err)
	}
	return string(b)
}

func startDev(t *testing.T, extra ...string) *devSystem {
	t.Helper()
	return startDevOn(t, filepath.Join(t.TempDir(), "dev"), pgtest.NewDatabase(t), extra...)
}

// startDevOn starts dev with data directory dataDir on database dbURL.
func startDevOn(t *testing.T, dataDir, dbURL string, extra ...string) *devSystem {
	t.Helper()
	stdout, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	d := &devSystem{t: t, dataDir: dataDir, stdout: stdout}
	natsPort := natsserver.FreePorts(t, 1)[0]
	d.nat = fmt.Sprintf("127.0.0.1:%d", natsPort)
	httpAddr := freeLoopback(t)
	d.api = "http://" + httpAddr
	args := append([]string{"-data-dir", d.dataDir, "-database-url", dbURL, "-nats-addr", d.nat,
		"-http-addr", httpAddr, "-rack-http-addr", "127.0.0.1:0", "-tftp-addr", "127.0.0.1:0", "-log-level", "error"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, args, stdout, io.Discard) }()
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("rackplane dev: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("rackplane dev still running 30s after Ctrl-C")
			}
		})
	}
	t.Cleanup(d.stop)
	regiontest.Eventually(t, 60*time.Second, "rackplane dev's banner", func() error {
		if !strings.Contains(d.out(), "Rackplane dev is running") {
			select {
			case err := <-done:
				t.Fatalf("rackplane dev stopped: %v\n%s", err, d.out())
			default:
			}
			return errors.New("not yet")
		}
		return nil
	})
	return d
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", natsserver.FreePorts(t, 1)[0])
}

func (d *devSystem) token() string {
	b, err := os.ReadFile(filepath.Join(d.dataDir, "token"))
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// rackplane runs client command cmd against the dev region, with args
// after its flags.
func (d *devSystem) rackplane(cmd []string, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	all := append(append(append([]string{}, cmd...), "-api", d.api, "-token", d.token()), args...)
	err := run(context.Background(), all, &out, &errOut)
	return out.String() + errOut.String(), err
}

func (d *devSystem) get(path string, out any) (int, error) {
	req, _ := http.NewRequest("GET", d.api+path, nil)
	req.Header.Set("Authorization", "Bearer "+d.token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: %w", b, err)
		}
	}
	return resp.StatusCode, nil
}

func (d *devSystem) rackOnline(name string, want bool) func() error {
	return func() error {
		var out struct{ Racks []rackplane.Rack }
		if _, err := d.get("/api/v1/racks", &out); err != nil {
			return err
		}
		for _, r := range out.Racks {
			if r.Name == name && r.Online == want {
				return nil
			}
		}
		return fmt.Errorf("want %s online=%v, racks %+v", name, want, out.Racks)
	}
}

// metric reads one sample from the region's /metrics.
func (d *devSystem) metric(sample string) string {
	resp, err := http.Get(d.api + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			return v
		}
	}
	return "absent"
}

// TestDevSecureByDefault runs `rackplane dev` as it starts with no flag:
// NATS takes only the region and racks that joined with a join token, the
// built-in rack joined that way, a second rack joins with the token dev
// keeps, an anonymous client is refused and counted, join tokens are
// managed from the CLI, and a revoked rack is cut off.
func TestDevSecureByDefault(t *testing.T) {
	d := startDev(t)
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	var ready struct {
		Ready  bool
		Checks map[string]string
	}
	if code, err := d.get("/readyz", &ready); err != nil || code != 200 || ready.Checks["nats_auth"] != "callout" {
		t.Fatalf("/readyz: %d %+v %v; want ready with the callout", code, ready, err)
	}
	if got := d.metric("rackplane_region_nats_auth_callout"); got != "1" {
		t.Errorf("rackplane_region_nats_auth_callout %s, want 1", got)
	}
	// Its secrets are its own.
	for _, f := range []string{"join-token", "token", "nats-auth/issuer.nk", "nats-auth/region.nk", "nats-auth/system.nk", "rack/nats.nk"} {
		if st, err := os.Stat(filepath.Join(d.dataDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, st.Mode(), err)
		}
	}
	joinToken, err := os.ReadFile(filepath.Join(d.dataDir, "join-token"))
	if err != nil || !strings.Contains(d.out(), strings.TrimSpace(string(joinToken))) ||
		!strings.Contains(d.out(), "-join-token-file "+filepath.Join(d.dataDir, "join-token")) {
		t.Errorf("the banner does not show the join token and how to join with it:\n%s", d.out())
	}

	// A second rack joins as the banner says, with the join token file.
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.HTTPAddr, cfg.TFTPAddrs = filepath.Join(t.TempDir(), "rack2"), "rack2", "127.0.0.1:0", nil
	cfg.ImportSystemBootloaders = false
	nc := dial.DefaultNATSConfig()
	nc.URL = "nats://" + d.nat
	rk, err := rackd.New(context.Background(), cfg, nc, rackd.NATSAuthConfig{JoinTokenFile: filepath.Join(d.dataDir, "join-token")}, regiontest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer rk.Close()
	regiontest.Run(t, rk.Run)
	regiontest.Eventually(t, 30*time.Second, "the second rack online", d.rackOnline("rack2", true))

	// Nobody else gets in.
	if c, err := nats.Connect("nats://"+d.nat, nats.Timeout(10*time.Second)); err == nil {
		c.Close()
		t.Fatal("an anonymous client connected to dev's NATS")
	}
	regiontest.Eventually(t, 10*time.Second, "the refusal counted", func() error {
		if got := d.metric(`rackplane_region_nats_auth_refused_total{reason="no_nkey"}`); got != "1" {
			return fmt.Errorf("refused_total{no_nkey} %s", got)
		}
		return nil
	})

	// Join tokens from the CLI: one made, listed beside dev's, revoked.
	out, err := d.rackplane([]string{"join-token", "create"}, "-ttl", "1h")
	tok, _, _ := strings.Cut(out, "\n")
	if err != nil || !strings.HasPrefix(tok, "rpj_") {
		t.Fatalf("join-token create: %v\n%s", err, out)
	}
	id := tok[4:12]
	if out, err := d.rackplane([]string{"join-token", "list"}); err != nil || strings.Count(out, "\n") != 3 || !strings.Contains(out, "rackplane-dev") {
		t.Fatalf("join-token list: %v\n%s", err, out)
	}
	var list struct {
		JoinTokens []struct{ ID string } `json:"join_tokens"`
	}
	if _, err := d.get("/api/v1/join-tokens", &list); err != nil {
		t.Fatal(err)
	}
	for _, jt := range list.JoinTokens {
		if strings.HasPrefix(strings.ReplaceAll(jt.ID, "-", ""), id) {
			if out, err := d.rackplane([]string{"join-token", "revoke"}, jt.ID); err != nil {
				t.Fatalf("join-token revoke: %v\n%s", err, out)
			}
		}
	}
	if out, err := d.rackplane([]string{"join-token", "list"}); err != nil || !strings.Contains(out, time.Now().Format("2006-01-02")) {
		t.Fatalf("join-token list after revoke: %v\n%s", err, out)
	}

	// Revoking the second rack cuts it off: disconnected now, refused on
	// every reconnect.
	out, err = d.rackplane([]string{"rack", "revoke"}, rk.ID())
	if err != nil || !strings.Contains(out, "1 connections closed") {
		t.Fatalf("rack revoke: %v\n%s", err, out)
	}
	regiontest.Eventually(t, 30*time.Second, "the revoked rack refused", func() error {
		if got := d.metric(`rackplane_region_nats_auth_refused_total{reason="rack_revoked"}`); got == "0" || got == "absent" {
			return fmt.Errorf("refused_total{rack_revoked} %s", got)
		}
		return nil
	})
	// The built-in rack is untouched.
	regiontest.Eventually(t, 10*time.Second, "the built-in rack still online", d.rackOnline("dev-rack", true))
}

// TestDevInsecureSaysSo: with -insecure-nats the embedded NATS takes any
// client, and the region says so on /readyz and in its metrics.
func TestDevInsecureSaysSo(t *testing.T) {
	d := startDev(t, "-insecure-nats")
	regiontest.Eventually(t, 30*time.Second, "the built-in rack online", d.rackOnline("dev-rack", true))
	var ready struct{ Checks map[string]string }
	if _, err := d.get("/readyz", &ready); err != nil || !strings.Contains(ready.Checks["nats_auth"], "off") {
		t.Fatalf("/readyz: %+v %v; want nats_auth off", ready, err)
	}
	if got := d.metric("rackplane_region_nats_auth_callout"); got != "0" {
		t.Errorf("rackplane_region_nats_auth_callout %s, want 0", got)
	}
	c, err := nats.Connect("nats://" + d.nat)
	if err != nil {
		t.Fatalf("an anonymous client on the open server: %v", err)
	}
	c.Close()
	if !strings.Contains(d.out(), "OPEN (-insecure-nats)") {
		t.Errorf("the banner does not say NATS is open:\n%s", d.out())
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, "join-token")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("join-token file: %v, want none", err)
	}
}
