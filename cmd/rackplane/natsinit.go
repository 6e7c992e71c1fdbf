package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rackplane/rackplane/internal/dial"
	"github.com/rackplane/rackplane/internal/logging"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/postgres"
)

// natsInitConfig is what `rackplane nats-init` makes and where.
type natsInitConfig struct {
	NATSDir, RegionDir, RackDir string
	TLSHosts                    string
	Account                     string
	DatabaseURL                 string
	JoinTokenTTL                time.Duration
	Owner                       string
}

func (c natsInitConfig) validate() error {
	var errs []error
	for name, dir := range map[string]string{"-nats-dir": c.NATSDir, "-region-dir": c.RegionDir} {
		if dir == "" || !filepath.IsAbs(dir) {
			errs = append(errs, fmt.Errorf("%s %q: want an absolute directory (the NATS configuration names files by it)", name, dir))
		}
	}
	if c.RackDir != "" && !filepath.IsAbs(c.RackDir) {
		errs = append(errs, fmt.Errorf("-rack-dir %q: want an absolute directory", c.RackDir))
	}
	if len(c.hosts()) == 0 {
		errs = append(errs, errors.New("-tls-hosts is empty: give the names and addresses clients reach NATS by, such as nats,localhost,127.0.0.1"))
	}
	if c.JoinTokenTTL < time.Minute || c.JoinTokenTTL > postgres.MaxJoinTokenTTL {
		errs = append(errs, fmt.Errorf("-join-token-ttl %s: want 1m to %s", c.JoinTokenTTL, postgres.MaxJoinTokenTTL))
	}
	return errors.Join(errs...)
}

func (c natsInitConfig) hosts() []string {
	var out []string
	for _, h := range strings.Split(c.TLSHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// runNATSInit makes, once, what a NATS server secured for the region's
// auth callout needs, with TLS, split by who may read it: the server's
// configuration, certificate and key (-nats-dir); the region's keys
// (-region-dir: the callout's issuer and its two NATS users); and what
// racks get (-rack-dir: the CA certificate and a join token). Files that
// exist are kept; a join token that no longer works is replaced. The
// compose stack runs it as a one-shot service.
func runNATSInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := natsInitConfig{TLSHosts: "nats,localhost,127.0.0.1", Account: natsauth.DefaultAccount, JoinTokenTTL: 24 * time.Hour}
	fs := flag.NewFlagSet("nats-init", flag.ContinueOnError)
	fs.StringVar(&cfg.NATSDir, "nats-dir", cfg.NATSDir, "the NATS server's directory: nats.conf, its TLS certificate and key (mount it at the same path in the server's container)")
	fs.StringVar(&cfg.RegionDir, "region-dir", cfg.RegionDir, "the region's directory: the callout's issuer seed, the region's NATS user seeds, the CA certificate")
	fs.StringVar(&cfg.RackDir, "rack-dir", cfg.RackDir, "the racks' directory: the CA certificate and a join token (needs the database); empty: none")
	fs.StringVar(&cfg.TLSHosts, "tls-hosts", cfg.TLSHosts, "comma-separated names and addresses of the NATS server's certificate")
	fs.StringVar(&cfg.Account, "nats-account", cfg.Account, "NATS account of the region and the racks")
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL, for the racks' join token (default $DATABASE_URL)")
	fs.DurationVar(&cfg.JoinTokenTTL, "join-token-ttl", cfg.JoinTokenTTL, "how long racks may join with the join token made for -rack-dir")
	fs.StringVar(&cfg.Owner, "owner", cfg.Owner, "user to give the region's and racks' files to (when run as root for a service running as that user)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	keys, err := natsserver.LoadOrCreateKeys(cfg.RegionDir)
	if err != nil {
		return err
	}
	auth, err := keys.Auth(cfg.Account)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.NATSDir, 0o700); err != nil {
		return err
	}
	caPEM, err := serverCert(cfg.NATSDir, cfg.hosts())
	if err != nil {
		return err
	}
	conf := filepath.Join(cfg.NATSDir, "nats.conf")
	if err := writeIfAbsent(conf, natsConf(cfg.NATSDir, auth), 0o600); err != nil {
		return err
	}
	for _, dir := range []string{cfg.RegionDir, cfg.RackDir} {
		if dir != "" {
			if err := writeIfAbsent(filepath.Join(dir, "ca.pem"), caPEM, 0o644); err != nil {
				return err
			}
		}
	}
	if cfg.RackDir != "" {
		log := logging.DefaultConfig().Logger()
		pool, err := dial.Postgres(ctx, dial.DatabaseURL(cfg.DatabaseURL))
		if err != nil {
			return err
		}
		defer pool.Close()
		db := postgres.New(pool, log)
		if err := db.Migrate(ctx); err != nil {
			return err
		}
		if _, err := joinTokenFile(ctx, db, filepath.Join(cfg.RackDir, "join-token"), cfg.JoinTokenTTL, "rackplane nats-init"); err != nil {
			return err
		}
	}
	if cfg.Owner != "" {
		if err := chownTree(cfg.Owner, cfg.RegionDir, cfg.RackDir); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "NATS secured for the region's auth callout (account %s, issuer %s)\n  server: %s\n  region: %s\n", auth.Account, auth.Issuer, conf, cfg.RegionDir)
	if cfg.RackDir != "" {
		fmt.Fprintf(stdout, "  racks:  %s (ca.pem, join-token)\n", cfg.RackDir)
	}
	return nil
}

// natsConf is the server's configuration: TLS for every client, and the
// accounts and callout of auth. JetStream, ports and clustering come
// from the server's command line.
func natsConf(dir string, auth natsserver.Auth) []byte {
	return []byte(fmt.Sprintf(`# Made by rackplane nats-init. Clients must use TLS; every client but the
# region is authorised by the region's auth callout.
tls {
  cert_file: %q
  key_file: %q
  timeout: 5
}
%s`, filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"), auth.ServerConfig()))
}

// serverCert makes, when dir has none, a CA and a server certificate for
// hosts signed by it, and returns the CA certificate. The CA's key is not
// kept: nothing else is ever signed with it.
func serverCert(dir string, hosts []string) ([]byte, error) {
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem")
	if ca, err := os.ReadFile(caFile); err == nil {
		if _, err := os.Stat(certFile); err == nil {
			return ca, nil
		}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "Rackplane NATS CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{caFile, caPEM, 0o644},
	} {
		if err := os.WriteFile(f.path, f.data, f.perm); err != nil {
			return nil, fmt.Errorf("server certificate: %w", err)
		}
	}
	return caPEM, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// writeIfAbsent writes data to path unless the file exists.
func writeIfAbsent(path string, data []byte, perm os.FileMode) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, perm)
}

// chownTree gives every file under dirs (and the dirs) to the user named
// owner.
func chownTree(owner string, dirs ...string) error {
	u, err := user.Lookup(owner)
	if err != nil {
		return fmt.Errorf("-owner: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("-owner %s: %w", owner, err)
	}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, uid, gid)
		})
		if err != nil {
			return fmt.Errorf("-owner: %w", err)
		}
	}
	return nil
}
