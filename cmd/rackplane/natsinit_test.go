package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/internal/daemon/rackd"
	"github.com/rackplane/rackplane/internal/daemon/regiond"
	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestNATSInit runs what the compose stack runs: `rackplane nats-init`
// makes the server's configuration, the region's keys and the racks' CA
// and join token, each file readable by its owner alone where it is a
// secret; a NATS server on that configuration takes TLS clients only; a
// region and a rack given what the compose file gives them work together
// over it; and a second run changes nothing.
func TestNATSInit(t *testing.T) {
	dir := t.TempDir()
	natsDir, regionDir, rackDir := filepath.Join(dir, "nats"), filepath.Join(dir, "region"), filepath.Join(dir, "rack")
	dbURL := pgtest.NewDatabase(t)
	args := []string{"-nats-dir", natsDir, "-region-dir", regionDir, "-rack-dir", rackDir, "-tls-hosts", "localhost,127.0.0.1", "-database-url", dbURL}
	var out bytes.Buffer
	if err := run(context.Background(), append([]string{"nats-init"}, args...), &out, io.Discard); err != nil {
		t.Fatalf("nats-init: %v", err)
	}
	secrets := []string{"nats/nats.conf", "nats/server-key.pem", "region/issuer.nk", "region/region.nk", "region/system.nk", "rack/join-token"}
	before := map[string]string{}
	for _, f := range append(secrets, "nats/server-cert.pem", "rack/ca.pem", "region/ca.pem") {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, f))
		before[f] = string(b)
		for _, s := range secrets {
			if s == f && st.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
			}
		}
	}
	for _, seed := range []string{"region/issuer.nk", "region/region.nk", "region/system.nk"} {
		if strings.Contains(before["nats/nats.conf"], strings.TrimSpace(before[seed])) {
			t.Errorf("the server's configuration holds the seed of %s", seed)
		}
	}

	ns := natsserver.StartTestConfig(t, filepath.Join(natsDir, "nats.conf"))
	tlsURL := strings.Replace(ns.URL, "nats://", "tls://", 1)
	if c, err := nats.Connect(ns.URL, nats.Timeout(5*time.Second)); err == nil {
		c.Close()
		t.Fatal("a client without TLS connected")
	}

	// The region as compose starts it.
	log := regiontest.Logger()
	pool, err := dial.Postgres(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	rcfg := region.DefaultConfig()
	rcfg.HTTPAddr = "127.0.0.1:0"
	rcfg.Secrets.KeyFile = regiontest.KeyFile(t) // compose's secrets-key service makes it
	regionNATS := dial.DefaultNATSConfig()
	regionNATS.URL, regionNATS.CAFile, regionNATS.NKeySeedFile = tlsURL, filepath.Join(regionDir, "ca.pem"), filepath.Join(regionDir, natsserver.RegionSeedFile)
	reg, err := regiond.New(rcfg, regionNATS, regiond.NATSAuthConfig{Account: natsauth.DefaultAccount,
		IssuerSeedFile: filepath.Join(regionDir, natsserver.IssuerSeedFile), SystemNKeyFile: filepath.Join(regionDir, natsserver.SystemSeedFile)}, pool, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	regiontest.Run(t, reg.Run)

	// A rack as compose starts it: the CA and the join token alone.
	kcfg := rack.DefaultConfig()
	kcfg.DataDir, kcfg.Name, kcfg.HTTPAddr, kcfg.TFTPAddrs, kcfg.ImportSystemBootloaders = filepath.Join(dir, "rackdata"), "rack1", "127.0.0.1:0", nil, false
	rackNATS := dial.DefaultNATSConfig()
	rackNATS.URL, rackNATS.CAFile = tlsURL, filepath.Join(rackDir, "ca.pem")
	rk, err := rackd.New(context.Background(), kcfg, rackNATS, rackd.NATSAuthConfig{JoinTokenFile: filepath.Join(rackDir, "join-token")}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rk.Close)
	regiontest.Run(t, rk.Run)
	db := postgres.New(pool, log)
	regiontest.Eventually(t, 30*time.Second, "the rack joined and online", func() error {
		c, err := db.GetRackCredential(context.Background(), rk.ID())
		if err != nil {
			return err
		}
		r, err := db.GetRack(context.Background(), rk.ID())
		if err != nil || r.Name != "rack1" || c.RevokedAt != nil {
			return fmt.Errorf("rack %+v %v, credential %+v", r, err, c)
		}
		return nil
	})

	// Run again: nothing changes.
	if err := run(context.Background(), append([]string{"nats-init"}, args...), io.Discard, io.Discard); err != nil {
		t.Fatalf("nats-init again: %v", err)
	}
	for f, was := range before {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != was {
			t.Errorf("%s changed on the second run", f)
		}
	}
}
