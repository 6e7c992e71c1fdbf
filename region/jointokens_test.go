package region_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nkeys"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestJoinTokensAPI: join tokens are made, listed (never with their
// secret), revoked and audited through the API; bad requests are 400s;
// and a region without its callout says a revoked rack is not kept off
// NATS, on the revocation and on /readyz.
func TestJoinTokensAPI(t *testing.T) {
	h := startRegion(t)
	var created struct {
		Token, ID string
		ExpiresAt time.Time `json:"expires_at"`
	}
	if code := h.do("POST", "/api/v1/join-tokens", map[string]string{"ttl": "2h"}, &created); code != 201 ||
		!strings.HasPrefix(created.Token, "rpj_") || time.Until(created.ExpiresAt) < 119*time.Minute || time.Until(created.ExpiresAt) > 2*time.Hour {
		t.Fatalf("create: %d %+v", code, created)
	}
	var dflt struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if code := h.do("POST", "/api/v1/join-tokens", nil, &dflt); code != 201 || time.Until(dflt.ExpiresAt) < 23*time.Hour {
		t.Fatalf("create without a body: %d %+v (want 24h)", code, dflt)
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	for _, body := range []any{map[string]string{"ttl": "soon"}, map[string]string{"ttl": "10s"}, map[string]string{"ttl": "9000h"}, map[string]int{"ttl": 5}} {
		if code := h.do("POST", "/api/v1/join-tokens", body, &e); code != 400 {
			t.Errorf("create with %v: %d %+v, want 400", body, code, e)
		}
	}

	var list struct {
		JoinTokens []map[string]any `json:"join_tokens"`
	}
	if code := h.getJSON("/api/v1/join-tokens", &list); code != 200 || len(list.JoinTokens) != 2 {
		t.Fatalf("list: %d %+v", code, list)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), created.Token[37:]) {
		t.Fatalf("the list shows a secret: %s", raw)
	}

	var revoked postgres.JoinToken
	if code := h.do("DELETE", "/api/v1/join-tokens/"+created.ID, nil, &revoked); code != 200 || revoked.RevokedAt == nil {
		t.Fatalf("revoke: %d %+v", code, revoked)
	}
	if code := h.do("DELETE", "/api/v1/join-tokens/"+uuid.NewString(), nil, &e); code != 404 {
		t.Errorf("revoke an unknown token: %d %+v", code, e)
	}
	if code := h.do("DELETE", "/api/v1/join-tokens/nope", nil, &e); code != 400 {
		t.Errorf("revoke a malformed id: %d %+v", code, e)
	}
	var audit struct {
		Entries []struct{ Actor, Action, Target, Outcome string }
	}
	h.getJSON("/api/v1/audit?target="+events.JoinTokenStreamName(created.ID), &audit)
	if len(audit.Entries) != 2 || audit.Entries[1].Action != "DELETE /api/v1/join-tokens/{id}" || audit.Entries[1].Actor != "tester" {
		t.Errorf("audit of the token: %+v", audit.Entries)
	}

	// A rack that never joined has no credential to show or revoke.
	for _, m := range []string{"GET", "DELETE"} {
		if code := h.do(m, "/api/v1/racks/"+uuid.NewString()+"/credential", nil, &e); code != 404 {
			t.Errorf("%s an unknown rack's credential: %d %+v", m, code, e)
		}
	}
	// One that did (as the callout would have bound it) is revoked, with
	// a warning: this region runs without its callout.
	db := postgres.New(h.pool, testLogger())
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	rackID := uuid.NewString()
	if _, err := db.AdmitRack(context.Background(), rackID, pub, freshJoinToken(t, db), time.Now()); err != nil {
		t.Fatal(err)
	}
	var rv struct {
		NKey         string     `json:"nkey"`
		RevokedAt    *time.Time `json:"revoked_at"`
		Disconnected int
		Warning      string
	}
	if code := h.do("DELETE", "/api/v1/racks/"+rackID+"/credential", nil, &rv); code != 200 || rv.NKey != pub || rv.RevokedAt == nil ||
		!strings.Contains(rv.Warning, "-no-nats-callout") {
		t.Fatalf("revoke the rack: %d %+v", code, rv)
	}
	resp, err := http.Get(h.api + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ready struct{ Checks map[string]string }
	json.NewDecoder(resp.Body).Decode(&ready)
	if !strings.HasPrefix(ready.Checks["nats_auth"], "off") {
		t.Errorf("/readyz nats_auth %q, want off", ready.Checks["nats_auth"])
	}
}

// freshJoinToken is a fresh join token's secret.
func freshJoinToken(t *testing.T, db *postgres.DB) string {
	t.Helper()
	_, plain, err := db.CreateJoinToken(context.Background(), time.Hour, "tester", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// lockedLog is a log two goroutines may write and read.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWithoutCalloutSaysSo: a region told to run without its NATS auth
// callout warns in its log as it starts; one given neither the callout's
// keys nor that, or both, does not start.
func TestWithoutCalloutSaysSo(t *testing.T) {
	ns := natsserver.StartTest(t)
	pool := pgtest.NewPool(t)
	cfg := region.DefaultConfig()
	cfg.HTTPAddr, cfg.Secrets.KeyFile = "127.0.0.1:0", regiontest.KeyFile(t)
	if _, err := region.New(cfg, pool, ns.Connect(), nil, testLogger()); err == nil || !strings.Contains(err.Error(), "-no-nats-callout") {
		t.Errorf("no callout keys and no -no-nats-callout: %v", err)
	}
	cfg.NoNATSCallout = true
	if _, err := region.New(cfg, pool, ns.Connect(), &region.NATSAuth{}, testLogger()); err == nil {
		t.Error("-no-nats-callout with the callout's keys: started")
	}
	log := &lockedLog{}
	r, err := region.New(cfg, pool, ns.Connect(), nil, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), `level=WARN msg="the region runs WITHOUT its NATS auth callout`) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning within 10s; the log:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
