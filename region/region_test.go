package region_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

type harness struct {
	t      testing.TB
	ns     *natsserver.Test
	nc     *nats.Conn
	js     jetstream.JetStream
	pool   *pgxpool.Pool
	dbURL  string
	api    string
	token  string
	client *http.Client // sends the token
}

// bearer adds an Authorization header to every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func testLogger() *slog.Logger {
	if os.Getenv("RACKPLANE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startRegion(t testing.TB) *harness {
	t.Helper()
	return startRegionWith(t, func(*region.Config) {})
}

// startRegionWith starts a region whose configuration set may change.
func startRegionWith(t testing.TB, set func(*region.Config)) *harness {
	t.Helper()
	return startRegionLogged(t, set, testLogger())
}

// startRegionLogged starts a region that logs to log.
func startRegionLogged(t testing.TB, set func(*region.Config), log *slog.Logger) *harness {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	return startRegionOn(t, dbURL, dbURL, set, log)
}

// startRegionOn starts a region on database dbURL, which it reaches at
// poolURL (the same, or a way there the test controls), logging to log.
func startRegionOn(t testing.TB, dbURL, poolURL string, set func(*region.Config), log *slog.Logger) *harness {
	t.Helper()
	h := &harness{t: t, ns: natsserver.StartTest(t), dbURL: dbURL}
	var err error
	if h.pool, err = pgxpool.New(context.Background(), poolURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.pool.Close)
	h.nc = h.ns.Connect()
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	cfg := region.DefaultConfig()
	cfg.Secrets.KeyFile = regiontest.KeyFile(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	// The tests here act as racks by publishing on h.nc: the server is
	// open and the region runs without its callout, which region/natsauth
	// and cmd/rackplane (TestDevSecureByDefault, TestNATSInit) test.
	cfg.NoNATSCallout = true
	set(&cfg)
	r, err := region.New(cfg, h.pool, h.ns.Connect(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	h.api = "http://" + r.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("region: %v", err)
		}
	})
	h.eventually(10*time.Second, "region ready", func() error {
		if h.token == "" {
			_, tok, err := postgres.New(h.pool, testLogger()).CreateToken(context.Background(), "test", "tester", "test-setup", time.Now())
			if err != nil {
				return err
			}
			h.token, h.client = tok, &http.Client{Transport: bearer{tok}}
		}
		// Ready means heartbeats sent from now on are heard: tests that
		// publish some right away rely on it, as an operator's load
		// balancer would.
		resp, err := http.Get(h.api + "/readyz")
		if err != nil {
			return err
		}
		var ready struct{ Checks map[string]string }
		json.NewDecoder(resp.Body).Decode(&ready)
		resp.Body.Close()
		if resp.StatusCode != 200 || ready.Checks["heartbeats"] != "listening" {
			return fmt.Errorf("readyz %d %v", resp.StatusCode, ready.Checks)
		}
		_, err = h.js.Stream(context.Background(), events.RackStream)
		return err
	})
	return h
}

func (h *harness) eventually(timeout time.Duration, what string, f func() error) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("%s: not within %s: %v", what, timeout, err)
}

func (h *harness) getJSON(path string, out any) int {
	h.t.Helper()
	resp, err := h.client.Get(h.api + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}

func (h *harness) rack(id string) (rackplane.Rack, int) {
	var r rackplane.Rack
	code := h.getJSON("/api/v1/racks/"+id, &r)
	return r, code
}

// waitRackKnown waits until the region knows rack id.
func (h *harness) waitRackKnown(id string) {
	h.t.Helper()
	h.eventually(5*time.Second, "rack known", func() error {
		if _, code := h.rack(id); code != 200 {
			return fmt.Errorf("rack: %d", code)
		}
		return nil
	})
}

func startRack(t testing.TB, h *harness, dataDir string, interval time.Duration) (*rack.Rack, context.CancelFunc) {
	t.Helper()
	return startRackConfig(t, h, rackConfig(h, dataDir, interval))
}

func rackConfig(h *harness, dataDir string, interval time.Duration) rack.Config {
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.HTTPAddr, cfg.HeartbeatInterval = dataDir, filepath.Base(dataDir), "127.0.0.1:0", interval
	cfg.TFTPAddrs, cfg.ImportSystemBootloaders = []string{"127.0.0.1:0"}, false
	return cfg
}

func startRackConfig(t testing.TB, h *harness, cfg rack.Config, opts ...rack.Option) (*rack.Rack, context.CancelFunc) {
	t.Helper()
	nc, err := nats.Connect(h.ns.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r, err := rack.New(context.Background(), cfg, nc, testLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); nc.Close(); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, stop
}

func TestRackJoinsGoesOfflineAndComesBack(t *testing.T) {
	h := startRegion(t)
	dir := filepath.Join(t.TempDir(), "rack-a")
	const interval = 200 * time.Millisecond
	r, stop := startRack(t, h, dir, interval)
	id := r.ID()
	h.eventually(5*time.Second, "rack online", func() error {
		got, code := h.rack(id)
		if code != 200 || !got.Online || got.Name != "rack-a" {
			return fmt.Errorf("status %d rack %+v", code, got)
		}
		if got.LastHeartbeat == nil || time.Since(*got.LastHeartbeat) > 5*interval {
			return fmt.Errorf("no recent heartbeat shown: %v", got.LastHeartbeat)
		}
		return nil
	})
	stop()
	stopped := time.Now()
	h.eventually(5*time.Second, "rack offline", func() error {
		if got, _ := h.rack(id); got.Online {
			return errors.New("still online")
		}
		return nil
	})
	// Three missed intervals plus the monitor's tick and the poll above.
	if took := time.Since(stopped); took > 3*interval+time.Second {
		t.Errorf("offline after %s, want within about %s", took, 3*interval)
	}
	r2, _ := startRack(t, h, dir, interval)
	if r2.ID() != id {
		t.Fatalf("restarted rack has id %s, want %s", r2.ID(), id)
	}
	h.eventually(5*time.Second, "rack online again", func() error {
		if got, _ := h.rack(id); !got.Online {
			return errors.New("still offline")
		}
		return nil
	})

	// The transitions are region events, relayed to JetStream: read until
	// both are there, then whatever else the stream holds.
	ctx := context.Background()
	cons, err := h.js.OrderedConsumer(ctx, events.RegionStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := events.NewValidator()
	var types []string
	read := func(m jetstream.Msg) {
		ev, err := v.Decode(m.Data())
		if err != nil {
			t.Fatalf("region event on %s does not validate: %v", m.Subject(), err)
		}
		if ev.Subject == events.RackStreamName(id) {
			types = append(types, ev.Type)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(types) < 2; {
		m, err := cons.Next(jetstream.FetchMaxWait(time.Until(deadline)))
		if err != nil {
			t.Fatalf("region events on the stream: %v, then %v", types, err)
		}
		read(m)
	}
	if info, err := cons.Info(ctx); err != nil {
		t.Fatal(err)
	} else if info.NumPending > 0 {
		msgs, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range msgs.Messages() {
			read(m)
		}
	}
	if strings.Join(types, ",") != events.TypeRackOffline+","+events.TypeRackOnline {
		t.Fatalf("region events on the stream: %v", types)
	}
}

// rejectedList is GET /api/v1/rejected-events.
type rejectedList struct {
	Rejected []struct {
		NATSSubject string `json:"nats_subject"`
		Reason      string `json:"reason"`
		Detail      string `json:"detail"`
	} `json:"rejected_events"`
}

func TestBadMessagesAreRejectedAndRecorded(t *testing.T) {
	h := startRegion(t)
	ctx := context.Background()
	rackID, other := uuid.NewString(), uuid.NewString()
	subj := events.RackEventSubject(rackID, events.TypeRackRegistered)
	good := func(name string, source string) []byte {
		e, _ := events.New(source, events.TypeRackRegistered, events.RackStreamName(events.RackIDFromSource(source)), time.Now(),
			events.RackRegistered{Name: name, Version: "1", StartedAt: time.Now().UTC()})
		b, _ := events.Encode(e)
		return b
	}
	unknown, _ := events.New(events.RackSource(rackID), "rackplane.rack.no_such_thing.v1", events.RackStreamName(rackID), time.Now(), map[string]int{"x": 1})
	unknownRaw, _ := events.Encode(unknown)
	broken, _ := events.New(events.RackSource(rackID), events.TypeRackRegistered, events.RackStreamName(rackID), time.Now(), map[string]any{"version": 7})
	brokenRaw, _ := events.Encode(broken)

	tests := []struct {
		name, subject string
		body          []byte
		reason        string
	}{
		{"garbage", subj, []byte("\x00\xffnot json at all"), events.ReasonMalformed},
		{"unknown type", events.RackEventSubject(rackID, "rackplane.rack.no_such_thing.v1"), unknownRaw, events.ReasonUnknownType},
		{"breaks its schema", subj, brokenRaw, events.ReasonSchema},
		{"another rack's event", subj, good("spoof", events.RackSource(other)), events.ReasonWrongSubject},
	}
	for _, tt := range tests {
		if _, err := h.js.Publish(ctx, tt.subject, tt.body); err != nil {
			t.Fatalf("%s: publish: %v", tt.name, err)
		}
	}
	if _, err := h.js.Publish(ctx, subj, good("after-the-bad-ones", events.RackSource(rackID))); err != nil {
		t.Fatal(err)
	}
	h.eventually(5*time.Second, "good event after bad ones processed", func() error {
		got, code := h.rack(rackID)
		if code != 200 || got.Name != "after-the-bad-ones" {
			return fmt.Errorf("rack: %d %+v", code, got)
		}
		return nil
	})
	var out rejectedList
	h.getJSON("/api/v1/rejected-events", &out)
	if len(out.Rejected) != len(tests) {
		t.Fatalf("rejected %d messages, want %d: %+v", len(out.Rejected), len(tests), out.Rejected)
	}
	// Newest first.
	for i, tt := range tests {
		got := out.Rejected[len(tests)-1-i]
		if got.Reason != tt.reason || got.NATSSubject != tt.subject || got.Detail == "" {
			t.Errorf("%s: recorded %+v, want reason %s", tt.name, got, tt.reason)
		}
	}
	if _, code := h.rack(other); code != 404 {
		t.Errorf("the spoofed rack exists (%d)", code)
	}
	resp, err := http.Get(h.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, reason := range []string{"malformed", "unknown_type", "schema", "wrong_subject"} {
		want := fmt.Sprintf(`rackplane_region_events_rejected_total{reason=%q} 1`, reason)
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestAPIErrors(t *testing.T) {
	h := startRegion(t)
	tests := []struct {
		path   string
		status int
		code   string
	}{
		{"/api/v1/racks/" + uuid.NewString(), 404, rackplane.ENOTFOUND},
		{"/api/v1/racks/not-a-uuid", 400, rackplane.EINVALID},
		{"/api/v1/events?after=garbage", 400, rackplane.EINVALID},
		{"/api/v1/events?limit=0", 400, rackplane.EINVALID},
		{"/api/v1/events?limit=abc", 400, rackplane.EINVALID},
		{"/api/v1/nothing-here", 404, rackplane.ENOTFOUND},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			status := h.getJSON(tt.path, &body)
			if status != tt.status || body.Error.Code != tt.code || body.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}
	var ok struct {
		Events []json.RawMessage `json:"events"`
		Next   string            `json:"next"`
	}
	if status := h.getJSON("/api/v1/events?limit=10", &ok); status != 200 || ok.Events == nil {
		t.Fatalf("events: %d %+v", status, ok)
	}
}

// TestBadHeartbeatsAreRecordedSparingly: heartbeats the region cannot take
// show in the rejected events with why, so a rack author sees why their
// rack stays offline; a rack repeating the mistake every few seconds is
// recorded once per subject, and every one is counted.
func TestBadHeartbeatsAreRecordedSparingly(t *testing.T) {
	h := startRegion(t)
	rackID, other := uuid.NewString(), uuid.NewString()
	for i := 0; i < 5; i++ {
		if err := h.nc.Publish(events.HeartbeatSubject(rackID), []byte(`{"seq": "not an envelope"}`)); err != nil {
			t.Fatal(err)
		}
	}
	spoof, _ := events.New(events.RackSource(other), events.TypeHeartbeat, events.RackStreamName(other), time.Now(),
		events.Heartbeat{Seq: 1, IntervalMS: 1000})
	raw, _ := events.Encode(spoof)
	for i := 0; i < 3; i++ {
		if err := h.nc.Publish(events.HeartbeatSubject(rackID+"x"), raw); err != nil {
			t.Fatal(err)
		}
	}
	h.nc.Flush()
	var out rejectedList
	h.eventually(10*time.Second, "both bad heartbeat subjects recorded", func() error {
		h.getJSON("/api/v1/rejected-events", &out)
		if len(out.Rejected) < 2 {
			return fmt.Errorf("%+v", out.Rejected)
		}
		return nil
	})
	// The first of each subject is recorded before the rest are counted.
	h.eventually(10*time.Second, "the metrics count the 8 bad heartbeats", func() error {
		if _, metrics, _ := h.raw("GET", h.api+"/metrics", nil, ""); !strings.Contains(metrics, "rackplane_region_heartbeats_rejected_total 8") {
			return fmt.Errorf("not 8 yet")
		}
		return nil
	})
	h.getJSON("/api/v1/rejected-events", &out)
	got := map[string]string{}
	for _, r := range out.Rejected {
		if _, dup := got[r.NATSSubject]; dup {
			t.Fatalf("%s recorded more than once: %+v", r.NATSSubject, out.Rejected)
		}
		got[r.NATSSubject] = r.Reason
		if r.Detail == "" {
			t.Fatalf("no detail: %+v", r)
		}
	}
	want := map[string]string{events.HeartbeatSubject(rackID): events.ReasonMalformed, events.HeartbeatSubject(rackID + "x"): events.ReasonWrongSubject}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("recorded %v, want %v", got, want)
	}
}
