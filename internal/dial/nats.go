package dial

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSConfig says how a binary reaches NATS. A user and password or a
// token go in the URL (nats://user:pass@host:4222); an nkey is a seed
// file, so the secret stays out of process listings.
//
// URL, NKeySeedFile and the TLS files are the operator's (RegisterFlags);
// Name, InboxPrefix, User, Token and AuthHint are the binary's, set in
// code.
type NATSConfig struct {
	URL  string
	Name string
	// User and Token go in the connection's user and auth_token fields,
	// beside the nkey's signature: a rack sends its id and its join
	// token, which the region's auth callout reads (region/natsauth).
	// Credentials in URL replace all three, as nats.go sends only those.
	User, Token string
	// AuthHint is logged with a refused authorisation: what this binary's
	// operator can do about it.
	AuthHint string
	// NKeySeedFile authenticates with the nkey whose seed the file holds.
	NKeySeedFile string
	// CAFile verifies the server's certificate (and turns TLS on);
	// CertFile and KeyFile are this client's, for servers that verify
	// clients.
	CAFile, CertFile, KeyFile string
	// InboxPrefix replaces _INBOX for replies to this connection, so
	// subject permissions can confine a rack to its own replies.
	InboxPrefix string
	// ServerCheck, when set, vets each server connected to (its version):
	// NATS returns its error when the first server is refused; a server
	// refused on a later (re)connect is logged as an error, since the
	// binary must keep running and retrying.
	ServerCheck func(*nats.Conn) error
}

// DefaultNATSConfig returns the defaults: the NATS server on this host.
func DefaultNATSConfig() NATSConfig {
	return NATSConfig{URL: nats.DefaultURL}
}

// RegisterFlags binds the operator's fields of c to flags of fs.
func (c *NATSConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "nats-url", c.URL, "NATS server URL(s), comma separated; a user and password or a token go in the URL")
	fs.StringVar(&c.NKeySeedFile, "nats-nkey", c.NKeySeedFile, "file holding the nkey seed to authenticate to NATS with")
	fs.StringVar(&c.CAFile, "nats-ca", c.CAFile, "CA certificate(s) to verify the NATS server with; turns TLS on")
	fs.StringVar(&c.CertFile, "nats-cert", c.CertFile, "client certificate for a NATS server that verifies clients")
	fs.StringVar(&c.KeyFile, "nats-key", c.KeyFile, "key of -nats-cert")
}

// Validate reports every problem of the operator's fields at once, each
// saying what to fix.
func (c NATSConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("-nats-url is empty: give the NATS server, such as nats://127.0.0.1:4222"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("-nats-cert and -nats-key go together: give both or neither"))
	}
	return errors.Join(errs...)
}

// NATS connects and keeps reconnecting forever, including when the server
// is not up yet: racks and regions outlive NATS restarts. A refused
// authorisation is logged each time, since retrying cannot fix it.
func NATS(cfg NATSConfig, log *slog.Logger) (*nats.Conn, error) {
	errs := &errorLog{log: log, authHint: cfg.AuthHint}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// A refused authorisation is retried like an absent server: the
		// operator may be fixing the server's users right now, and a rack
		// that gave up would stay cut off until restarted.
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ConnectHandler(func(c *nats.Conn) {
			errs.reset()
			log.Info("connected to NATS", "url", c.ConnectedUrlRedacted(), "server_version", c.ConnectedServerVersion())
			vet(cfg, c, log)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			errs.reset()
			log.Info("reconnected to NATS", "url", c.ConnectedUrlRedacted(), "server_version", c.ConnectedServerVersion())
			vet(cfg, c, log)
		}),
		// Permission violations and auth failures arrive here; without a
		// handler nats.go would print them to stderr unstructured.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) { errs.report(sub, err) }),
		// Why a (re)connect failed: a refused password, a TLS mismatch, a
		// server that is down.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { errs.report(nil, err) }),
	}
	if cfg.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		if cfg.CertFile == "" || cfg.KeyFile == "" {
			return nil, fmt.Errorf("nats client certificate: give both the certificate and its key")
		}
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, ""))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", redact(cfg.URL), err)
	}
	// Connected at once: a refused server stops the binary here.
	if cfg.ServerCheck != nil && nc.IsConnected() {
		if err := cfg.ServerCheck(nc); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return nc, nil
}

// vet logs a server cfg.ServerCheck refuses on a later connect.
func vet(cfg NATSConfig, c *nats.Conn, log *slog.Logger) {
	if cfg.ServerCheck == nil {
		return
	}
	if err := cfg.ServerCheck(c); err != nil {
		log.Error("NATS server refused", "err", err)
	}
}

// URLHasCredentials tells whether a URL of urls carries a user, password
// or token, which nats.go sends instead of any other credentials.
func URLHasCredentials(urls string) bool {
	for _, p := range strings.Split(urls, ",") {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			return true
		}
	}
	return false
}

// redact hides the secrets of a comma-separated NATS URL list: a
// password, or a user alone, which NATS takes as a token.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// errorLog logs asynchronous NATS errors, each distinct one once until the
// connection is up again: a refused password is retried every few hundred
// milliseconds, and one line says as much as a thousand.
type errorLog struct {
	log      *slog.Logger
	authHint string
	mu       sync.Mutex
	seen     map[string]bool
}

func (e *errorLog) report(sub *nats.Subscription, err error) {
	key := err.Error()
	if sub != nil {
		key = sub.Subject + ": " + key
	}
	e.mu.Lock()
	first := !e.seen[key]
	if e.seen == nil {
		e.seen = map[string]bool{}
	}
	e.seen[key] = true
	e.mu.Unlock()
	if !first {
		return
	}
	if sub != nil {
		e.log.Error("NATS error", "subject", sub.Subject, "err", err)
		return
	}
	switch {
	case e.authHint != "" && errors.Is(err, nats.ErrAuthorization):
		e.log.Error("NATS error", "err", err, "hint", e.authHint)
		return
	case errors.Is(err, nats.ErrNkeysNotSupported):
		e.log.Error("NATS error", "err", err, "hint", "the NATS server asks for no authentication: it takes any client. "+
			"Secure it for the region's auth callout (rackplane nats-init), or connect to it as it is with -insecure-nats")
		return
	}
	e.log.Error("NATS error", "err", err)
}

func (e *errorLog) reset() {
	e.mu.Lock()
	e.seen = nil
	e.mu.Unlock()
}
