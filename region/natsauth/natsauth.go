package natsauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/backoff"
	"github.com/rackplane/rackplane/region/postgres"
)

// DefaultAccount is the NATS account the region and the racks work in:
// the server's auth_callout account, where admitted racks are placed.
const DefaultAccount = "RACKPLANE"

// calloutSubject is where the server asks (jwt and nats-server agree on
// it; the server package is too big to import for one constant).
const calloutSubject = "$SYS.REQ.USER.AUTH"

// queue makes region instances share the callout: each request is
// answered once.
const queue = "rackplane-region-natsauth"

// Why a connection is refused beyond what the database decides
// (postgres.Refused*); the words are metric labels.
const (
	refusedBadRequest  = "bad_request"   // not an authorization request the server signed
	refusedNoNKey      = "no_nkey"       // no nkey: no credentials, or a password alone
	refusedBadNKey     = "bad_nkey"      // not a user public key
	refusedBadRackID   = "bad_rack_id"   // user name not a rack id (a lower-case UUID)
	refusedBadSig      = "bad_signature" // no nonce, or the signature is not the nkey's over it
	refusedUnavailable = "unavailable"   // the database did not answer
)

var refusalReasons = []string{refusedBadRequest, refusedNoNKey, refusedBadNKey, refusedBadRackID, refusedBadSig,
	postgres.RefusedRevoked, postgres.RefusedKeyMismatch, postgres.RefusedNoJoinToken, postgres.RefusedBadJoinToken,
	postgres.RefusedExpiredToken, postgres.RefusedRevokedToken, refusedUnavailable}

// Store is what the callout needs of the region's database.
type Store interface {
	AdmitRack(ctx context.Context, rackID, nkey, joinToken string, now time.Time) (joined bool, err error)
	RevokeRack(ctx context.Context, rackID, by string, now time.Time) (postgres.RackCredential, error)
	RetireRack(ctx context.Context, rackID, by, reason string, now time.Time) (postgres.RackRetirement, error)
	CreateFirstJoinToken(ctx context.Context, ttl time.Duration, createdBy string, now time.Time) (postgres.JoinToken, string, bool, error)
}

// Config configures a Service.
type Config struct {
	// Account is where admitted racks are placed: the server's
	// auth_callout account (default DefaultAccount).
	Account string
	// Issuer signs the answers and the racks' user JWTs: the account key
	// the server's auth_callout names as issuer. Required.
	Issuer nkeys.KeyPair
	// System is a connection of the region's user in the server's system
	// account, which finds and disconnects a revoked rack's connections.
	// Required.
	System *nats.Conn
	// FirstJoinTokenFile, when set, is where the first join token goes
	// (0600) when the region makes it, instead of the log.
	FirstJoinTokenFile string
	// FirstJoinTokenTTL is how long that token is valid (default 24h).
	FirstJoinTokenTTL time.Duration
	// Workers bounds the requests decided at once (default 16): a NATS
	// restart brings every rack back at the same moment.
	Workers int
	// Gather is how long a search for a rack's connections waits for the
	// servers' answers (default 1s): a cluster answers once per server,
	// and how many servers there are is not known in advance.
	Gather time.Duration
	// SweepAgain is how long after a revocation the rack's connections
	// are looked for once more (default 10s, beyond the server's
	// authentication timeout; see the package documentation).
	SweepAgain time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Service is the callout.
type Service struct {
	nc    *nats.Conn
	store Store
	cfg   Config
	log   *slog.Logger

	listening atomic.Bool
	resweep   chan string

	admitted *prometheus.CounterVec
	refused  *prometheus.CounterVec
	kicked   prometheus.Counter
}

// New returns the callout, answering on nc (the region's connection, a
// user in auth_users).
func New(nc *nats.Conn, store Store, cfg Config) (*Service, error) {
	if cfg.Account == "" {
		cfg.Account = DefaultAccount
	}
	if cfg.FirstJoinTokenTTL <= 0 {
		cfg.FirstJoinTokenTTL = 24 * time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Gather <= 0 {
		cfg.Gather = time.Second
	}
	if cfg.SweepAgain <= 0 {
		cfg.SweepAgain = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Issuer == nil {
		return nil, errors.New("natsauth: no issuer key")
	}
	if pub, err := cfg.Issuer.PublicKey(); err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("natsauth: the issuer must be an account key (its seed starts with SA), not a key of kind %.1q", pub)
	}
	if cfg.System == nil {
		return nil, errors.New("natsauth: no connection of the system account")
	}
	s := &Service{nc: nc, store: store, cfg: cfg, log: cfg.Logger, resweep: make(chan string, 64),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_nats_auth_admitted_total",
			Help: "Rack connections the NATS auth callout admitted: bound (a known rack) or joined (with a join token).",
		}, []string{"how"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rackplane_region_nats_auth_refused_total",
			Help: "Connections to NATS the auth callout refused, by reason.",
		}, []string{"reason"}),
		kicked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rackplane_region_nats_auth_disconnected_total",
			Help: "Connections of revoked racks the region disconnected.",
		}),
	}
	for _, how := range []string{"bound", "joined"} {
		s.admitted.WithLabelValues(how)
	}
	for _, r := range refusalReasons {
		s.refused.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.admitted, s.refused, s.kicked)
	}
	return s, nil
}

// Listening reports whether the server has the callout's subscription:
// until then no rack can connect.
func (s *Service) Listening() bool { return s.listening.Load() }

// Run answers the server's requests until ctx ends. At start it makes
// the first join token when none was ever made.
func (s *Service) Run(ctx context.Context) error {
	if err := s.firstJoinToken(ctx); err != nil {
		return err
	}
	sem := make(chan struct{}, s.cfg.Workers)
	var work sync.WaitGroup
	defer work.Wait()
	sub, err := s.nc.QueueSubscribe(calloutSubject, queue, func(m *nats.Msg) {
		// Blocking here holds the next request back: the server waits
		// for an answer up to its authentication timeout anyway.
		sem <- struct{}{}
		work.Add(1)
		go func() {
			defer func() { <-sem; work.Done() }()
			s.answer(ctx, m)
		}()
	})
	if err != nil {
		return fmt.Errorf("natsauth: subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	go s.awaitListening(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case id := <-s.resweep:
			work.Add(1)
			go func() {
				defer work.Done()
				select {
				case <-ctx.Done():
					return
				case <-time.After(s.cfg.SweepAgain):
				}
				if n, err := s.disconnect(ctx, id); err != nil {
					s.log.Error("revoked rack: second search for its connections failed", "rack_id", id, "err", err)
				} else if n > 0 {
					s.log.Warn("revoked rack: disconnected connections admitted while it was being revoked", "rack_id", id, "connections", n)
				}
			}()
		}
	}
}

// awaitListening marks the callout listening once the server has its
// subscription.
func (s *Service) awaitListening(ctx context.Context) {
	retry := backoff.New(backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second})
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.nc.FlushWithContext(fctx)
		cancel()
		if err == nil {
			s.listening.Store(true)
			return
		}
		if !retry.Wait(ctx) {
			return
		}
	}
}

// firstJoinToken makes the installation's first join token when none was
// ever made, and says it once: in the log, or in FirstJoinTokenFile.
func (s *Service) firstJoinToken(ctx context.Context) error {
	t, plain, created, err := s.store.CreateFirstJoinToken(ctx, s.cfg.FirstJoinTokenTTL, "region", s.cfg.Now())
	if err != nil {
		return fmt.Errorf("first join token: %w", err)
	}
	if !created {
		return nil
	}
	if f := s.cfg.FirstJoinTokenFile; f != "" {
		if err := writeSecret(f, plain); err != nil {
			return fmt.Errorf("first join token: %w", err)
		}
		s.log.Info("made the first join token: racks join with it (rackd -join-token-file); it is not shown again",
			"path", f, "join_token_id", t.ID, "expires_at", t.ExpiresAt)
		return nil
	}
	s.log.Info("made the first join token: start racks with -join-token (or RACKPLANE_JOIN_TOKEN) set to it; "+
		"it is shown this once (rackplane join-token create makes more)",
		"join_token", plain, "join_token_id", t.ID, "expires_at", t.ExpiresAt)
	return nil
}

// writeSecret writes s to path, readable by its owner alone.
func writeSecret(path, s string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// answer decides one request and answers it.
func (s *Service) answer(ctx context.Context, m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		// Without the request's user key and server id there is no
		// answer the server would take: it times the client out.
		s.refused.WithLabelValues(refusedBadRequest).Inc()
		s.log.Warn("NATS auth callout: not an authorization request", "err", err)
		return
	}
	// The server waits up to its authentication timeout (5s as
	// internal/natsserver configures it); an answer later is wasted.
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	rackID, joined, reason := s.decide(ctx, req)
	if reason != "" {
		s.refused.WithLabelValues(reason).Inc()
		s.log.Warn("NATS connection refused", "reason", reason, "user", clip(req.ConnectOptions.Username),
			"nkey", clip(req.ConnectOptions.Nkey), "client_host", req.ClientInformation.Host,
			"client_name", clip(req.ClientInformation.Name), "server", req.Server.Name)
		s.respond(m, req, "", "rackplane: refused: "+reason)
		return
	}
	ujwt, err := s.userJWT(req.UserNkey, rackID)
	if err != nil {
		s.refused.WithLabelValues(refusedUnavailable).Inc()
		s.log.Error("NATS auth callout: sign the rack's credentials", "rack_id", rackID, "err", err)
		s.respond(m, req, "", "rackplane: region error")
		return
	}
	if joined {
		s.admitted.WithLabelValues("joined").Inc()
		s.log.Info("rack joined: bound to its nkey", "rack_id", rackID, "nkey", req.ConnectOptions.Nkey,
			"client_host", req.ClientInformation.Host)
	} else {
		s.admitted.WithLabelValues("bound").Inc()
		s.log.Debug("rack admitted to NATS", "rack_id", rackID, "client_host", req.ClientInformation.Host)
	}
	s.respond(m, req, ujwt, "")
}

// decide returns the rack a request is from when it is admitted, or why
// it is refused.
func (s *Service) decide(ctx context.Context, req *jwt.AuthorizationRequestClaims) (rackID string, joined bool, reason string) {
	o := req.ConnectOptions
	if o.Nkey == "" {
		return "", false, refusedNoNKey
	}
	if !nkeys.IsValidPublicUserKey(o.Nkey) {
		return "", false, refusedBadNKey
	}
	// The canonical form only: the rack's subjects are built from it,
	// and an upper-case twin would be another set of subjects.
	if id, err := uuid.Parse(o.Username); err != nil || id.String() != o.Username {
		return "", false, refusedBadRackID
	}
	if !signed(o.Nkey, req.ClientInformation.Nonce, o.SignedNonce) {
		return "", false, refusedBadSig
	}
	token := o.Token
	if token == "" {
		token = o.Password
	}
	joined, err := s.store.AdmitRack(ctx, o.Username, o.Nkey, token, s.cfg.Now())
	var refused *postgres.RackRefused
	switch {
	case errors.As(err, &refused):
		return "", false, refused.Reason
	case err != nil:
		s.log.Error("NATS auth callout: the database did not answer; refusing", "user", o.Username, "err", err)
		return "", false, refusedUnavailable
	}
	return o.Username, joined, ""
}

// signed tells whether sig (base64, as clients send it) is nkey's
// signature of nonce. The server sends every client a nonce when it has
// nkey users (the region's); without one a signature could be replayed.
func signed(nkey, nonce, sig string) bool {
	if nonce == "" || sig == "" {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		if raw, err = base64.StdEncoding.DecodeString(sig); err != nil {
			return false
		}
	}
	kp, err := nkeys.FromPublicKey(nkey)
	if err != nil {
		return false
	}
	return kp.Verify([]byte(nonce), raw) == nil
}

// userJWT is an admitted rack's credentials: the user the server made
// for this connection, named by the rack's id (connz shows it, and
// revocation finds it by it), placed in the racks' account, with the
// rack's own subjects alone. Replies to the requests it answers go out
// under allow_responses (one reply each, as a server configuration's
// allow_responses: true), so it needs no publish rights on other clients'
// inboxes.
func (s *Service) userJWT(userNkey, rackID string) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = rackID
	uc.Audience = s.cfg.Account
	p := events.RackPermissions(rackID)
	uc.Pub.Allow.Add(p.Publish...)
	uc.Sub.Allow.Add(p.Subscribe...)
	uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: 2 * time.Minute}
	// A rack is a plain client: not a leaf node, websocket or MQTT one.
	uc.AllowedConnectionTypes.Add(jwt.ConnectionTypeStandard)
	return uc.Encode(s.cfg.Issuer)
}

// respond sends the server the answer for req: the user JWT, or the
// reason of a refusal (the server logs it; the client only learns it was
// not authorised).
func (s *Service) respond(m *nats.Msg, req *jwt.AuthorizationRequestClaims, userJWT, refusal string) {
	rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	rc.Audience = req.Server.ID
	rc.Jwt = userJWT
	rc.Error = refusal
	tok, err := rc.Encode(s.cfg.Issuer)
	if err != nil {
		s.log.Error("NATS auth callout: sign the answer", "err", err)
		return
	}
	if err := m.Respond([]byte(tok)); err != nil {
		s.log.Warn("NATS auth callout: answer not sent", "err", err)
	}
}

// clip bounds what a client chose before it goes into the log.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
