package natsserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/internal/dial"
)

// Auth is a server secured the way Rackplane's region expects: every
// client but the region is decided by the region's auth callout
// (region/natsauth), which places racks in Account with the permissions
// of their own subjects. The same text configures the embedded server of
// `rackplane dev` and the nats-server of the compose stack (rackplane
// nats-init), so the two cannot drift.
type Auth struct {
	// Account is where the region and the racks work, with JetStream.
	Account string
	// Issuer is the public account nkey (A...) whose signature the server
	// accepts on the callout's answers.
	Issuer string
	// Region is the public user nkey (U...) of the region's user in
	// Account, and System that of its user in the system account (to
	// find and disconnect a revoked rack's connections). Both are in
	// auth_users: they bypass the callout, which runs on Region's
	// connection. Being nkey users also makes the server send every
	// client a nonce, which a rack's nkey signs: without one the
	// signature would prove nothing and could be replayed.
	Region, System string
	// Timeout is how long a client may take to authenticate, the
	// callout's answer included (0: 5s).
	Timeout time.Duration
}

// SystemAccount is the system account of the configuration Auth renders.
const SystemAccount = "SYS"

var accountName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// Validate reports every problem of a at once.
func (a Auth) Validate() error {
	var errs []error
	if !accountName.MatchString(a.Account) || a.Account == SystemAccount {
		errs = append(errs, fmt.Errorf("NATS account %q: want a name of letters, digits, _ and -, not %s", a.Account, SystemAccount))
	}
	if !nkeys.IsValidPublicAccountKey(a.Issuer) {
		errs = append(errs, fmt.Errorf("callout issuer %q: want a public account nkey (A...)", a.Issuer))
	}
	for name, k := range map[string]string{"region": a.Region, "system": a.System} {
		if !nkeys.IsValidPublicUserKey(k) {
			errs = append(errs, fmt.Errorf("%s user %q: want a public user nkey (U...)", name, k))
		}
	}
	if a.Region == a.System {
		errs = append(errs, errors.New("the region's user and its system user must be different nkeys"))
	}
	return errors.Join(errs...)
}

// ServerConfig renders a as the accounts and authorization sections of a
// nats-server configuration.
func (a Auth) ServerConfig() string {
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return fmt.Sprintf(`# Rackplane: racks are authorised by the region's NATS auth callout.
accounts {
  %[1]s {
    jetstream: enabled
    users: [ { nkey: %[3]s } ]
  }
  %[5]s {
    users: [ { nkey: %[4]s } ]
  }
}
system_account: %[5]s
authorization {
  timeout: %[6]g
  auth_callout {
    issuer: %[2]s
    account: %[1]s
    auth_users: [ %[3]s, %[4]s ]
  }
}
`, a.Account, a.Issuer, a.Region, a.System, SystemAccount, timeout.Seconds())
}

// Keys are the secrets behind an Auth: the callout's issuer and the
// region's two users, each an nkey seed in a file of its own under one
// directory.
type Keys struct {
	Issuer, Region, System nkeys.KeyPair
}

// The files LoadOrCreateKeys keeps the seeds in, under its directory.
const (
	IssuerSeedFile = "issuer.nk"
	RegionSeedFile = "region.nk"
	SystemSeedFile = "system.nk"
)

// LoadOrCreateKeys returns the keys kept in dir, making each one missing
// (dir 0700, files 0600: they are the region's secrets; a rack must never
// see them).
func LoadOrCreateKeys(dir string) (Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Keys{}, fmt.Errorf("nats keys: %w", err)
	}
	var k Keys
	var err error
	if k.Issuer, err = dial.LoadOrCreateNKey(filepath.Join(dir, IssuerSeedFile), nkeys.CreateAccount); err != nil {
		return Keys{}, err
	}
	if k.Region, err = dial.LoadOrCreateNKey(filepath.Join(dir, RegionSeedFile), nkeys.CreateUser); err != nil {
		return Keys{}, err
	}
	if k.System, err = dial.LoadOrCreateNKey(filepath.Join(dir, SystemSeedFile), nkeys.CreateUser); err != nil {
		return Keys{}, err
	}
	return k, nil
}

// Auth is the server configuration that trusts k, with the region and
// racks in account.
func (k Keys) Auth(account string) (Auth, error) {
	a := Auth{Account: account}
	var err1, err2, err3 error
	a.Issuer, err1 = k.Issuer.PublicKey()
	a.Region, err2 = k.Region.PublicKey()
	a.System, err3 = k.System.PublicKey()
	if err := errors.Join(err1, err2, err3); err != nil {
		return Auth{}, fmt.Errorf("nats keys: %w", err)
	}
	return a, a.Validate()
}
