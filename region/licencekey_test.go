package region_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/netnstest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/region/secrets"
)

// recorder keeps every API response body.
type recorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	r.mu.Lock()
	r.bodies = append(r.bodies, req.Method+" "+req.URL.Path+" → "+string(b))
	r.mu.Unlock()
	return resp, nil
}

// natsMsg is one message seen on NATS.
type natsMsg struct{ subject, data string }

// TestLicenceKeyStaysSecret sets a licence key (after a refused one),
// deploys a machine whose preseed renders it and has its installer fetch
// the preseed; then it looks for both keys in every message on NATS, every
// event and audit row (every table of the database, in fact), every log
// line of the region and the rack, every API answer and the rack's data
// directory. The installer's preseed holds the key; otherwise it crosses
// NATS only to the rack's own rpc subject and its own reply inbox.
func TestLicenceKeyStaysSecret(t *testing.T) {
	const (
		key     = "QWERT-12345-ZXCVB-67890-POIUY"
		refused = "hunter2-is-not-a-licence-key"
	)
	var logs netnstest.Buffer // safe for the loggers and the test at once
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startRegionLogged(t, func(*region.Config) {}, log)
	rec := &recorder{next: bearer{h.token}}
	h.client = &http.Client{Transport: rec}

	// Everything on NATS from now on.
	var seenMu sync.Mutex
	var seen []natsMsg
	watch := h.ns.Connect()
	if _, err := watch.Subscribe(">", func(m *nats.Msg) {
		seenMu.Lock()
		seen = append(seen, natsMsg{m.Subject, string(m.Data)})
		seenMu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}

	// A rack as rackd runs one: its replies come to its own inbox.
	dataDir := filepath.Join(t.TempDir(), "rack-w")
	id, err := rack.LoadOrCreateID(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(h.ns.URL, nats.CustomInboxPrefix(events.RackInboxPrefix(id)), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	r, err := rack.New(context.Background(), rackConfig(h, dataDir, 200*time.Millisecond), nc, log.With("component", "rack"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); nc.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	importInto(t, r, imageSource(t, "windows/win2022/amd64/generic"))
	h.waitForRegistry("windows/win2022/amd64/generic:rack-w")

	var e struct {
		Error struct{ Code, Message string }
	}
	if code := h.do("PUT", "/api/v1/os/windows/win2022/licence-key", map[string]string{"key": refused}, &e); code != 400 {
		t.Fatalf("refused key: %d %+v", code, e)
	}
	if code := h.do("PUT", "/api/v1/os/windows/win2022/licence-key", map[string]string{"key": key}, nil); code != 200 {
		t.Fatalf("good key: %d", code)
	}
	tmpl := "#cloud-config\nhostname: {{.Machine.Hostname}}\nwindows_key: {{.LicenceKey}}\n"
	if code := h.do("POST", "/api/v1/preseeds", map[string]any{"name": "default", "content": tmpl}, nil); code != 201 {
		t.Fatalf("create preseed: %d", code)
	}
	m := h.newMachine("win1", "52:54:00:cc:00:01")
	if code := h.do("POST", "/api/v1/machines/"+m.ID+"/deploy", map[string]any{"os": "windows", "release": "win2022"}, &e); code != 200 {
		t.Fatalf("deploy: %d %+v", code, e)
	}
	// The installer's fetch: the one place the key is meant to reach.
	var preseed string
	preseedPath := h.preseedPath(r.HTTPAddr(), m)
	h.eventually(10*time.Second, "the installer's preseed", func() error {
		resp, err := http.Get("http://" + r.HTTPAddr() + preseedPath)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if preseed = string(b); resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		return nil
	})
	if !strings.Contains(preseed, "windows_key: "+key) {
		t.Fatalf("the installer's preseed lacks the key:\n%s", preseed)
	}
	for _, path := range []string{"/api/v1/os/windows/win2022/licence-key", "/api/v1/os", "/api/v1/events?limit=1000",
		"/api/v1/audit?limit=1000", "/api/v1/machines/" + m.ID, "/api/v1/preseeds/default", "/api/v1/rejected-events"} {
		h.getJSON(path, new(any))
	}

	// Where each secret may be, and whether it was there (so that a
	// broken watch cannot pass the test).
	own := events.RackRPCSubject(id, events.MethodValidateLicenceKey)
	inbox := events.RackInboxPrefix(id) + "."
	forms := func(s string) []string {
		return []string{s, s[:10], hex.EncodeToString([]byte(s)), base64.StdEncoding.EncodeToString([]byte(s))}
	}
	allowedSeen := map[string]int{}
	check := func(where, text string) {
		t.Helper()
		for _, secret := range []string{key, refused} {
			for _, f := range forms(secret) {
				if strings.Contains(text, f) {
					t.Errorf("%s holds %q:\n%.2000s", where, f, text)
				}
			}
		}
	}
	seenMu.Lock()
	msgs := append([]natsMsg(nil), seen...)
	seenMu.Unlock()
	for _, msg := range msgs {
		if msg.subject == own || strings.HasPrefix(msg.subject, inbox) {
			if strings.Contains(msg.data, key) || strings.Contains(msg.data, refused) {
				where := "own rpc subject"
				if msg.subject != own {
					where = "own inbox"
				}
				allowedSeen[where]++
			}
			continue
		}
		check("NATS message on "+msg.subject, msg.data)
	}
	if allowedSeen["own rpc subject"] < 2 || allowedSeen["own inbox"] < 1 {
		t.Errorf("the keys were seen on the rack's own subjects %v times: the watch missed the validations (want 2 on %s) or the preseed (on %s…)", allowedSeen, own, inbox)
	}
	t.Logf("%d NATS messages, %d carrying a key, all on the rack's own rpc subject or inbox: %v", len(msgs), sum(allowedSeen), allowedSeen)

	rec.mu.Lock()
	for _, b := range rec.bodies {
		check("API answer", b)
	}
	t.Logf("%d API answers", len(rec.bodies))
	rec.mu.Unlock()
	check("the logs", logs.String())
	t.Logf("%d log lines", strings.Count(logs.String(), "\n"))

	// Every table, events and audit_log included.
	var tables []string
	rows, err := h.pool.Query(context.Background(), `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	for _, tbl := range tables {
		check("table "+tbl, h.dump(tbl))
	}
	var nEvents, nAudit int
	if err := h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM audit_log)`).Scan(&nEvents, &nAudit); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tables, %d events, %d audit rows", len(tables), nEvents, nAudit)

	// The rack keeps the preseed sealed; nothing else of it in clear.
	files := 0
	err = filepath.WalkDir(dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		check("rack file "+path, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files in the rack's data directory", files)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestRegionSealsSecretsAtStart: a region starting on a database with a
// licence key left in clear by the migration, and one under a key it was
// not given, seals the first before it serves and counts the second.
func TestRegionSealsSecretsAtStart(t *testing.T) {
	keyFile := regiontest.KeyFile(t)
	h := startRegionWith(t, func(c *region.Config) { c.Secrets.KeyFile = keyFile })
	ctx := context.Background()
	stranger := regiontest.Keys(t).SealSecret(postgres.LicenceKeyName("esxi", "8.0"), []byte("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE"))
	if _, err := h.pool.Exec(ctx, `INSERT INTO sealed_secrets (name, sealed, key_id, fingerprint, updated_at) VALUES ($1, $2, $3, $4, now())`, stranger.Name, stranger.Sealed, stranger.KeyID, stranger.Fingerprint); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, `INSERT INTO sealed_secrets (name, unsealed, fingerprint, updated_at) VALUES ('licence_key/windows/win2022', 'QWERT-12345-ZXCVB-67890-POIUY', 'bare', now())`); err != nil {
		t.Fatal(err)
	}

	// A second region on the same database starts.
	cfg := region.DefaultConfig()
	cfg.HTTPAddr, cfg.Secrets.KeyFile, cfg.NoNATSCallout = "127.0.0.1:0", keyFile, true
	r, err := region.New(cfg, h.pool, h.ns.Connect(), nil, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	second := &harness{t: t, api: "http://" + r.Addr()}
	second.eventually(10*time.Second, "the second region serving", func() error {
		resp, err := http.Get(second.api + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if n := second.metric("rackplane_region_secrets_unreadable"); n != 1 {
		t.Errorf("rackplane_region_secrets_unreadable %v, want 1 (the value under a stranger key)", n)
	}
	key, err := secrets.LoadKeyFile(keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keyID, fingerprint string
	var unsealed *string
	if err := h.pool.QueryRow(ctx, `SELECT key_id, unsealed, fingerprint FROM sealed_secrets WHERE name = 'licence_key/windows/win2022'`).Scan(&keyID, &unsealed, &fingerprint); err != nil {
		t.Fatal(err)
	}
	if keyID != key.ID() || unsealed != nil || fingerprint == "bare" {
		t.Errorf("the clear key after the start: key %s (want %s), unsealed %v, fingerprint %s", keyID, key.ID(), unsealed, fingerprint)
	}
}
