package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// testCA issues certificates into a directory, as an operator's CA would.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{t: t, dir: t.TempDir()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rackplane test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.key = key
	ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *testCA) write(name, typ string, der []byte) string {
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issue returns the certificate and key files of a server (for 127.0.0.1)
// or a client named name.
func (ca *testCA) issue(name string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "EC PRIVATE KEY", kder)
}

// TestRegionAndRackOverMutualTLS runs NATS requiring TLS with client
// certificates: regiond and rackd given -nats-ca, -nats-cert and -nats-key
// work together (the rack joins and answers a live query), while a client
// without a certificate, or one that does not trust the server, is refused.
func TestRegionAndRackOverMutualTLS(t *testing.T) {
	endToEnd(t)
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue("nats", true)
	regionCert, regionKey := ca.issue("regiond", false)
	rackCert, rackKey := ca.issue("rackd", false)
	conf := fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n  timeout: 2\n}\n",
		serverCert, serverKey, filepath.Join(ca.dir, "ca.pem"))
	confFile := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := natsserver.StartTestConfig(t, confFile)
	tlsURL := strings.Replace(ns.URL, "nats://", "tls://", 1)
	caFile := filepath.Join(ca.dir, "ca.pem")

	dbURL := pgtest.NewDatabase(t)
	regionAddr := freeAddr(t)
	start(t, "regiond", "-no-nats-callout", "-nats-url", tlsURL, "-nats-ca", caFile, "-nats-cert", regionCert, "-nats-key", regionKey,
		"-database-url", dbURL, "-http-addr", regionAddr)
	a := api{t: t, base: "http://" + regionAddr, token: token(t, dbURL)}
	start(t, "rackd", "-insecure-nats", "-nats-url", tlsURL, "-nats-ca", caFile, "-nats-cert", rackCert, "-nats-key", rackKey,
		"-data-dir", t.TempDir(), "-name", "tls-rack", "-http-addr", freeAddr(t), "-tftp-addr", freeUDPAddr(t),
		"-import-system-bootloaders=false", "-heartbeat-interval", "1s")
	eventually(t, 15*time.Second, "the rack online over TLS", func() error {
		rs, err := racks(context.Background(), a.base, a.token)
		if r, ok := rackByName(rs, "tls-rack"); err != nil || !ok || !r.Online {
			return fmt.Errorf("racks %+v %v", rs, err)
		}
		return nil
	})
	var l struct {
		NotAnswered []any `json:"not_answered"`
	}
	if code := a.call("GET", "/api/v1/os?live=true", nil, nil, &l); code != 200 || len(l.NotAnswered) != 0 {
		t.Fatalf("live query over TLS: %d %+v", code, l)
	}

	for _, c := range []struct {
		what string
		opts []nats.Option
		want string
	}{
		// TLS 1.3 servers refuse after the handshake: the client sees the
		// "certificate required" alert or just a reset, depending on timing.
		{"no client certificate", []nats.Option{nats.RootCAs(caFile)}, ""},
		{"not trusting the server", []nats.Option{nats.ClientCert(rackCert, rackKey)}, "certificate"},
	} {
		nc, err := nats.Connect(tlsURL, append(c.opts, nats.Timeout(3*time.Second))...)
		if err == nil {
			nc.Close()
			t.Fatalf("a client with %s connected", c.what)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Fatalf("a client with %s: %v", c.what, err)
		}
		t.Logf("a client with %s is refused: %v", c.what, err)
	}
}
