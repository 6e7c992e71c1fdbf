package natsauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/region/natsauth"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// harness is a region's callout on a secured embedded NATS server and a
// database of the test's own.
type harness struct {
	t        *testing.T
	db       *postgres.DB
	ns       *natsserver.Test
	region   *nats.Conn // the region's own connection (in auth_users)
	registry *prometheus.Registry
	svc      *natsauth.Service
}

func start(t *testing.T) *harness {
	t.Helper()
	keys, err := natsserver.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	auth, err := keys.Auth(natsauth.DefaultAccount)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: regiontest.DB(t), ns: natsserver.StartTestAuth(t, auth), registry: prometheus.NewRegistry()}
	h.region = h.ns.ConnectNKey(keys.Region)
	h.svc, err = natsauth.New(h.region, h.db, natsauth.Config{Issuer: keys.Issuer, System: h.ns.ConnectNKey(keys.System),
		Gather: 300 * time.Millisecond, Logger: regiontest.Logger(), Registerer: h.registry})
	if err != nil {
		t.Fatal(err)
	}
	regiontest.Run(t, h.svc.Run)
	regiontest.Eventually(t, 10*time.Second, "callout listening", func() error {
		if !h.svc.Listening() {
			return errors.New("not yet")
		}
		return nil
	})
	return h
}

// joinToken makes a join token made at created, valid for ttl.
func (h *harness) joinToken(ttl time.Duration, created time.Time) (postgres.JoinToken, string) {
	h.t.Helper()
	jt, plain, err := h.db.CreateJoinToken(context.Background(), ttl, "tester", created)
	if err != nil {
		h.t.Fatal(err)
	}
	return jt, plain
}

// rack is a rack's key and id.
type rack struct {
	id string
	kp nkeys.KeyPair
}

func newRack(t *testing.T) rack {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return rack{id: uuid.NewString(), kp: kp}
}

func (r rack) pub() string {
	p, _ := r.kp.PublicKey()
	return p
}

// connect connects as a rack does: its id as user, its nkey's signature,
// a join token, replies under its own inbox prefix.
func (h *harness) connect(r rack, token string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.UserInfo(r.id, ""), nats.Nkey(r.pub(), r.kp.Sign),
		nats.CustomInboxPrefix(events.RackInboxPrefix(r.id)), nats.Timeout(10 * time.Second),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})}, opts...)
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	nc, err := nats.Connect(h.ns.URL, opts...)
	if err == nil {
		h.t.Cleanup(nc.Close)
	}
	return nc, err
}

func (h *harness) refused(reason string) float64 {
	return metrictest.Value(h.t, h.registry, "rackplane_region_nats_auth_refused_total", map[string]string{"reason": reason})
}

func (h *harness) admitted(how string) float64 {
	return metrictest.Value(h.t, h.registry, "rackplane_region_nats_auth_admitted_total", map[string]string{"how": how})
}

// TestRefused: every connection the callout must not admit is refused by
// the server and counted under its reason.
func TestRefused(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	_, valid := h.joinToken(time.Hour, time.Now())
	revokedTok, revoked := h.joinToken(time.Hour, time.Now())
	if _, err := h.db.RevokeJoinToken(ctx, revokedTok.ID, "tester", time.Now()); err != nil {
		t.Fatal(err)
	}
	_, expired := h.joinToken(time.Minute, time.Now().Add(-2*time.Minute))
	bound := newRack(t)
	if nc, err := h.connect(bound, valid); err != nil {
		t.Fatalf("a rack with a valid join token: %v", err)
	} else {
		nc.Close()
	}
	other, _ := nkeys.CreateUser()
	upper := newRack(t)
	upper.id = strings.ToUpper(upper.id)

	tests := []struct {
		name   string
		reason string
		dial   func() (*nats.Conn, error)
	}{
		{"no credentials", "no_nkey", func() (*nats.Conn, error) { return nats.Connect(h.ns.URL) }},
		{"a password alone", "no_nkey", func() (*nats.Conn, error) {
			return nats.Connect(h.ns.URL, nats.UserInfo(newRack(t).id, valid))
		}},
		{"a signature by another key", "bad_signature", func() (*nats.Conn, error) {
			r := newRack(t)
			return nats.Connect(h.ns.URL, nats.UserInfo(r.id, ""), nats.Token(valid), nats.Nkey(r.pub(), other.Sign))
		}},
		{"a user name that is no rack id", "bad_rack_id", func() (*nats.Conn, error) {
			r := newRack(t)
			r.id = "region"
			return h.connect(r, valid)
		}},
		{"a rack id in upper case", "bad_rack_id", func() (*nats.Conn, error) { return h.connect(upper, valid) }},
		{"a new rack without a join token", "no_join_token", func() (*nats.Conn, error) { return h.connect(newRack(t), "") }},
		{"a join token that does not exist", "bad_join_token", func() (*nats.Conn, error) {
			return h.connect(newRack(t), "rpj_"+strings.Repeat("0", 32)+"_"+strings.Repeat("0", 64))
		}},
		{"a valid token's id with a wrong secret", "bad_join_token", func() (*nats.Conn, error) {
			return h.connect(newRack(t), valid[:len(valid)-4]+"0000")
		}},
		{"an API token", "bad_join_token", func() (*nats.Conn, error) { return h.connect(newRack(t), "rp_abc_def") }},
		{"a revoked join token", "revoked_join_token", func() (*nats.Conn, error) { return h.connect(newRack(t), revoked) }},
		{"an expired join token", "expired_join_token", func() (*nats.Conn, error) { return h.connect(newRack(t), expired) }},
		{"a bound rack's id with another key", "key_mismatch", func() (*nats.Conn, error) {
			return h.connect(rack{id: bound.id, kp: other}, valid)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.refused(tt.reason)
			nc, err := tt.dial()
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("refused with %v, want an authorization violation", err)
			}
			if got := h.refused(tt.reason); got != before+1 {
				t.Errorf("refused_total{reason=%q} went from %v to %v, want +1", tt.reason, before, got)
			}
		})
	}
	// The bound rack itself still gets in, with or without the token.
	for _, tok := range []string{"", valid} {
		nc, err := h.connect(bound, tok)
		if err != nil {
			t.Fatalf("the bound rack (token %v): %v", tok != "", err)
		}
		nc.Close()
	}
	if got := h.admitted("joined"); got != 1 {
		t.Errorf("admitted{how=joined} = %v, want 1", got)
	}
	if got := h.admitted("bound"); got != 2 {
		t.Errorf("admitted{how=bound} = %v, want 2", got)
	}
}

// violations collects a connection's asynchronous errors (permission
// violations arrive that way).
type violations chan error

func (v violations) option() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case v <- err:
		default:
		}
	})
}

// next returns the next error, failing after 10s.
func (v violations) next(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-v:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no permissions violation within 10s", what)
		return nil
	}
}

// TestRackConfinedToItsSubjects: a rack that joined with a join token
// publishes its events, answers the region's rpc and asks the region's
// rpc; it can neither publish as another rack or as the region, nor read
// another rack's rpc or the callout's requests.
func TestRackConfinedToItsSubjects(t *testing.T) {
	h := start(t)
	_, tok := h.joinToken(time.Hour, time.Now())
	r, b := newRack(t), newRack(t)
	errs := make(violations, 16)
	nc, err := h.connect(r, tok, errs.option())
	if err != nil {
		t.Fatal(err)
	}

	// Its own events reach the region.
	own, err := h.region.SubscribeSync("rackplane.rack.*.event.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.region.Flush(); err != nil {
		t.Fatal(err)
	}
	subject := events.RackEventSubject(r.id, events.TypeHeartbeat)
	if err := nc.Publish(subject, []byte("beat")); err != nil {
		t.Fatal(err)
	}
	if m, err := own.NextMsg(10 * time.Second); err != nil || m.Subject != subject {
		t.Fatalf("the region got %v, %v; want the rack's event on %s", m, err, subject)
	}
	// It answers the region's rpc (its replies go out under
	// allow_responses) and asks the region's.
	if _, err := nc.Subscribe(events.RackRPCSubject(r.id, "ping"), func(m *nats.Msg) { _ = m.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := h.region.Request(events.RackRPCSubject(r.id, "ping"), nil, 10*time.Second); err != nil || string(m.Data) != "pong" {
		t.Fatalf("region → rack rpc: %v %v", m, err)
	}
	if _, err := h.region.Subscribe(events.RegionRPCWildcard("probe"), func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := h.region.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := nc.Request(events.RegionRPCSubject(r.id, "probe"), nil, 10*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("rack → region rpc: %v %v", m, err)
	}

	for _, subject := range []string{
		events.RackEventSubject(b.id, events.TypeRackRegistered), // as another rack
		events.RegionEventSubject(events.TypeBootDecisionSet),    // as the region
		events.RegionRPCSubject(b.id, "probe"),                   // asking as another rack
		"$SYS.REQ.USER.AUTH",                                     // as the server
	} {
		if err := nc.Publish(subject, []byte("forged")); err != nil {
			t.Fatal(err)
		}
		if err := errs.next(t, "publish "+subject); !strings.Contains(err.Error(), "Permissions Violation for Publish") {
			t.Errorf("publish %s: %v", subject, err)
		}
	}
	for _, subject := range []string{events.RackRPCSubject(b.id, ">"), "$SYS.REQ.USER.AUTH", "_INBOX.>"} {
		if _, err := nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		if err := errs.next(t, "subscribe "+subject); !strings.Contains(err.Error(), "Permissions Violation for Subscription") {
			t.Errorf("subscribe %s: %v", subject, err)
		}
	}
	// Nothing forged reached the region: the next message it gets from
	// the rack is what the rack sent after the forgeries.
	if err := nc.Publish(subject, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if m, err := own.NextMsg(10 * time.Second); err != nil || string(m.Data) != "after" {
		t.Errorf("the region got %v %v; want the rack's message sent after the forgeries", m, err)
	}
}

// TestRevokedRackDisconnected: revoking a rack closes its connection at
// once, and its reconnects are refused.
func TestRevokedRackDisconnected(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	jt, tok := h.joinToken(time.Hour, time.Now())
	r, keep := newRack(t), newRack(t)
	disconnected := make(chan struct{}, 1)
	nc, err := h.connect(r, tok, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			select {
			case disconnected <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	other, err := h.connect(keep, tok)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := h.db.GetRackCredential(ctx, r.id); err != nil || c.NKey != r.pub() || *c.JoinTokenID != jt.ID {
		t.Fatalf("credential %+v %v; want bound to %s with token %s", c, err, r.pub(), jt.ID)
	}

	rv, err := h.svc.RevokeRack(ctx, r.id, "tester")
	if err != nil || rv.Disconnected != 1 || rv.RevokedAt == nil || rv.Warning != "" {
		t.Fatalf("revoke: %+v, %v; want revoked, 1 connection closed", rv, err)
	}
	select {
	case <-disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked rack is still connected 10s later")
	}
	regiontest.Eventually(t, 10*time.Second, "its reconnects refused", func() error {
		if got := h.refused("rack_revoked"); got < 1 {
			return errors.New("no refusal counted yet")
		}
		if nc.IsConnected() {
			return errors.New("connected again")
		}
		return nil
	})
	if got := metrictest.Value(t, h.registry, "rackplane_region_nats_auth_disconnected_total", nil); got != 1 {
		t.Errorf("disconnected_total = %v, want 1", got)
	}
	// The other rack, on the same token, is untouched; the revoked one
	// stays out with a new token too.
	if !other.IsConnected() {
		t.Error("the other rack was disconnected")
	}
	_, tok2 := h.joinToken(time.Hour, time.Now())
	if _, err := h.connect(r, tok2); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("the revoked rack with a new token: %v, want refused", err)
	}
	// The log has the join and the revocation, neither with a token.
	evs := regiontest.StreamEvents(t, h.db, events.RackStreamName(r.id))
	if len(evs) != 2 || evs[0].Type != events.TypeRackJoined || evs[1].Type != events.TypeRackRevoked {
		t.Fatalf("rack stream %+v; want rack_joined, rack_revoked", evs)
	}
	for _, e := range evs {
		if strings.Contains(string(e.Data), tok[4:36]) || !strings.Contains(string(e.Data), r.pub()) {
			t.Errorf("%s: %s", e.Type, e.Data)
		}
	}
}

// TestAfterNATSRestart: after the server restarts, the region's callout
// is back and the rack gets in again without its join token, which has
// meanwhile been revoked.
func TestAfterNATSRestart(t *testing.T) {
	h := start(t)
	jt, tok := h.joinToken(time.Hour, time.Now())
	r := newRack(t)
	nc, err := h.connect(r, tok, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.RevokeJoinToken(context.Background(), jt.ID, "tester", time.Now()); err != nil {
		t.Fatal(err)
	}
	h.ns.Restart()
	regiontest.Eventually(t, 30*time.Second, "the rack back after the restart", func() error {
		if !nc.IsConnected() || nc.Reconnects == 0 {
			return errors.New("not reconnected")
		}
		if got := h.admitted("bound"); got < 1 {
			return errors.New("not admitted as bound")
		}
		return nil
	})
	// And it works: the region hears it.
	sub, err := h.region.SubscribeSync(events.HeartbeatSubject(r.id))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.region.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(events.HeartbeatSubject(r.id), []byte("beat")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("the rack's heartbeat after the restart: %v", err)
	}
}
