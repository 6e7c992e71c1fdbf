package region_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
	rackpower "github.com/rackplane/rackplane/rack/power"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/api"
	"github.com/rackplane/rackplane/region/postgres"
)

// natsTap records every message on the server, as an unrestricted
// client sees it.
type natsTap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func tapNATS(t *testing.T, h *harness) *natsTap {
	t.Helper()
	tap := &natsTap{}
	nc := h.ns.Connect()
	t.Cleanup(nc.Close)
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		tap.mu.Lock()
		tap.msgs = append(tap.msgs, m)
		tap.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return tap
}

// holding returns the subjects of the messages whose subject, headers
// or data hold s.
func (n *natsTap) holding(s string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.msgs {
		if strings.Contains(m.Subject, s) || strings.Contains(m.Reply, s) || bytes.Contains(m.Data, []byte(s)) ||
			strings.Contains(fmt.Sprint(m.Header), s) {
			out = append(out, m.Subject)
		}
	}
	return out
}

// powerRack starts a rack whose power search path holds the shell driver
// shellbmc (testdata/power), logging to log, and waits until the region
// knows the driver is there.
func powerRack(t testing.TB, h *harness, log *slog.Logger, timeout time.Duration) *rack.Rack {
	t.Helper()
	// Without polls: a test that times actions out must not find a poll
	// holding the machine (TestPowerPolling polls).
	return powerRackWith(t, h, log, func(s *rackpower.Settings) { s.Timeout, s.StatePollInterval = timeout, 0 })
}

// powerRackWith is powerRack with the rack's power settings as set
// changes them.
func powerRackWith(t testing.TB, h *harness, log *slog.Logger, set func(*rackpower.Settings)) *rack.Rack {
	t.Helper()
	search, err := filepath.Abs("testdata/power")
	if err != nil {
		t.Fatal(err)
	}
	cfg := rackConfig(h, filepath.Join(t.TempDir(), "power-rack"), 200*time.Millisecond)
	cfg.Power.SearchPath = []string{search}
	set(&cfg.Power)
	nc, err := nats.Connect(h.ns.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	r, err := rack.New(context.Background(), cfg, nc, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); nc.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	db := postgres.New(h.pool, testLogger())
	h.eventually(10*time.Second, "shellbmc reported", func() error {
		ds, err := db.PowerDriverRacks(context.Background(), "shellbmc")
		if err != nil {
			return err
		}
		if len(ds) != 1 || !ds[0].Available || !ds[0].Online || ds[0].RackID != r.ID() {
			return fmt.Errorf("shellbmc on racks: %+v", ds)
		}
		return nil
	})
	return r
}

// powerView is any answer of the power routes: parameters and state,
// an action's result, or an error.
type powerView struct {
	api.PowerView
	State   string `json:"state"`
	Outcome string `json:"outcome"`
	Error   struct{ Code, Message string }
}

func TestPowerThroughTheAPI(t *testing.T) {
	var logs netnstest.Buffer // safe for the loggers and the test at once
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := startRegionLogged(t, func(*region.Config) {}, log)
	tap := tapNATS(t, h)
	r := powerRack(t, h, log.With("process", "rack"), 5*time.Second)

	const secret = "S3cret-bmc-Pw_71" // IPMI's 20 bytes would take it too
	const wrong = "Wr0ng-bmc-Pw_4491" // refused by the BMC, which quotes it
	bmc := filepath.Join(t.TempDir(), "bmc")
	if err := os.WriteFile(bmc, []byte("off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bmc+".password", []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}

	// Every API response is kept, to look for the password in.
	var responses []string
	call := func(method, path string, body any, out any) int {
		t.Helper()
		b := ""
		if body != nil {
			raw, _ := json.Marshal(body)
			b = string(raw)
		}
		code, resp, hdr := h.raw(method, h.api+path, map[string]string{"Content-Type": "application/json"}, b)
		responses = append(responses, fmt.Sprint(hdr)+resp)
		if out != nil && resp != "" {
			if err := json.Unmarshal([]byte(resp), out); err != nil {
				t.Fatalf("%s %s: %d %q: %v", method, path, code, resp, err)
			}
		}
		return code
	}

	var m machineOut
	if code := call("POST", "/api/v1/machines", map[string]any{"hostname": "pw1", "macs": []string{"52:54:00:ee:00:01"}, "arch": "amd64",
		"boot_rack_id": r.ID()}, &m); code != 201 {
		t.Fatalf("create machine: %d %+v", code, m)
	}
	var lone machineOut
	if code := call("POST", "/api/v1/machines", map[string]any{"hostname": "pw2", "macs": []string{"52:54:00:ee:00:02"}, "arch": "amd64"}, &lone); code != 201 {
		t.Fatalf("create machine: %d %+v", code, lone)
	}
	path := "/api/v1/machines/" + m.ID + "/power"
	good := map[string]any{"driver": "shellbmc", "address": bmc, "username": "admin", "password": secret, "extra": map[string]string{"note": "rack 4, u12"}}

	// Refusals name every bad field at once and never quote a password.
	for _, tc := range []struct {
		name string
		body any
		code int
		says []string
	}{
		{"every field bad", map[string]any{"driver": "Bad Driver", "address": "a\nb", "port": 70000, "username": strings.Repeat("u", 300),
			"password": "x\x00y", "extra": map[string]string{"Bad": "v"}, "rack_id": "rack-1"}, 400,
			[]string{"driver", "address", "port", "username", "password", "extra name", "rack_id"}},
		{"ipmi password too long", map[string]any{"driver": "ipmi", "address": "10.0.0.1", "password": secret + "-and-more"}, 400,
			[]string{"password is 25 bytes: IPMI takes at most 20"}},
		{"unknown field", map[string]any{"driver": "shellbmc", "pasword": secret}, 400, []string{"unknown field"}},
		{"rack that never joined", map[string]any{"driver": "shellbmc", "rack_id": "0191c1f2-0000-7000-8000-000000000000"}, 400, []string{"no rack"}},
		{"not json", "{", 400, []string{"request body"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e powerView
			if code := call("PUT", path, tc.body, &e); code != tc.code {
				t.Fatalf("%d %+v, want %d", code, e, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Error.Message, s) {
					t.Errorf("error %q does not say %q", e.Error.Message, s)
				}
			}
			if strings.Contains(e.Error.Message, secret) {
				t.Errorf("error quotes the password: %q", e.Error.Message)
			}
		})
	}

	var p powerView
	if code := call("PUT", path, good, &p); code != 200 || !p.PasswordSet || len(p.PasswordFingerprint) != 64 || p.Driver != "shellbmc" ||
		p.Address != bmc || p.Username != "admin" || p.Extra["note"] != "rack 4, u12" || p.RackID != "" {
		t.Fatalf("set: %d %+v", code, p)
	}
	fingerprint := p.PasswordFingerprint
	if code := call("GET", path+"?live=false", nil, &p); code != 200 || p.Live || p.PowerState != "unknown" || p.DrivingRackID == nil ||
		*p.DrivingRackID != r.ID() || !p.PasswordSet {
		t.Fatalf("show: %d %+v", code, p)
	}
	var before machineOut
	h.getJSON("/api/v1/machines/"+m.ID, &before)

	// on, off, cycle and a live status, end to end through the rack's
	// shell driver: the BMC file says what the rack did.
	for _, tc := range []struct {
		method, path, want string
	}{
		{"POST", "/on", "on"},
		{"POST", "/off", "off"},
		{"POST", "/cycle", "on"},
		{"GET", "", "on"},
	} {
		var res powerView
		if code := call(tc.method, path+tc.path, nil, &res); code != 200 {
			t.Fatalf("%s power%s: %d %+v", tc.method, tc.path, code, res)
		}
		got := res.State
		if tc.method == "GET" {
			got = res.PowerState
			if !res.Live || res.PowerCheckedAt == nil || res.Driver != "shellbmc" {
				t.Errorf("live status: %+v", res)
			}
		}
		b, _ := os.ReadFile(bmc)
		if got != tc.want || strings.TrimSpace(string(b)) != tc.want {
			t.Errorf("%s power%s: answered %q, BMC %q; want %q", tc.method, tc.path, got, b, tc.want)
		}
	}
	// The machine shows the state the rack's events leave, and power is
	// no change of it: neither its version (ETag) nor updated_at moves.
	h.eventually(5*time.Second, "power state projected", func() error {
		var after struct {
			machineOut
			PowerState     string     `json:"power_state"`
			PowerCheckedAt *time.Time `json:"power_checked_at"`
			UpdatedAt      time.Time  `json:"updated_at"`
		}
		h.getJSON("/api/v1/machines/"+m.ID, &after)
		if after.PowerState != "on" || after.PowerCheckedAt == nil {
			return fmt.Errorf("machine shows %q at %v", after.PowerState, after.PowerCheckedAt)
		}
		if after.Version != before.Version {
			t.Fatalf("power moved the machine's version from %d to %d", before.Version, after.Version)
		}
		return nil
	})

	// A wrong password: the BMC's refusal is a conflict with the reason
	// (not 401), and the rack has masked the password the BMC quoted.
	wrongBody := map[string]any{"driver": "shellbmc", "address": bmc, "username": "admin", "password": wrong}
	if code := call("PUT", path, wrongBody, &p); code != 200 || p.PasswordFingerprint == fingerprint {
		t.Fatalf("set wrong password: %d %+v", code, p)
	}
	var e powerView
	if code := call("POST", path+"/off", nil, &e); code != 409 || !strings.Contains(e.Error.Message, "auth_failed") || strings.Contains(e.Error.Message, wrong) {
		t.Fatalf("off with a wrong password: %d %+v", code, e)
	}
	// Set again, then change the address only: the password stays.
	if code := call("PUT", path, good, &p); code != 200 || p.PasswordFingerprint != fingerprint {
		t.Fatalf("set again: %d %+v (fingerprint %s before)", code, p, fingerprint)
	}
	keep := map[string]any{"driver": "shellbmc", "address": bmc, "username": "admin", "rack_id": r.ID()}
	if code := call("PUT", path, keep, &p); code != 200 || !p.PasswordSet || p.PasswordFingerprint != fingerprint || p.RackID != r.ID() {
		t.Fatalf("set without password: %d %+v", code, p)
	}
	if code := call("POST", path+"/off", nil, &e); code != 200 || e.State != "off" {
		t.Fatalf("off with the kept password: %d %+v", code, e)
	}

	// What cannot be asked of any rack is refused, saying why.
	for _, tc := range []struct {
		name, path string
		set        map[string]any
		code       int
		says       string
	}{
		{"no parameters", "/api/v1/machines/" + lone.ID + "/power/on", nil, 409, "no power parameters"},
		{"no rack drives it", "/api/v1/machines/" + lone.ID + "/power/on", good, 409, "no rack drives"},
		{"driver the rack lacks", path + "/on", map[string]any{"driver": "nosuch", "address": bmc}, 409, "does not report power driver nosuch"},
		{"unknown action", path + "/explode", nil, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.set != nil {
				if code := call("PUT", strings.TrimSuffix(tc.path, "/on"), tc.set, nil); code != 200 {
					t.Fatalf("set: %d", code)
				}
			}
			var e powerView
			if code := call("POST", tc.path, nil, &e); code != tc.code || !strings.Contains(e.Error.Message, tc.says) {
				t.Fatalf("%d %+v, want %d saying %q", code, e, tc.code, tc.says)
			}
		})
	}

	// Clearing removes the parameters and the sealed password.
	if code := call("DELETE", path, nil, nil); code != 204 {
		t.Fatalf("clear: %d", code)
	}
	if code := call("GET", path+"?live=false", nil, &e); code != 404 {
		t.Fatalf("show after clear: %d %+v", code, e)
	}
	if s := h.dump("sealed_secrets"); strings.Contains(s, "power/"+m.ID) {
		t.Errorf("sealed password left after clear: %s", s)
	}
	if code := call("DELETE", path, nil, nil); code != 404 {
		t.Fatalf("clear twice: %d", code)
	}

	// The events: requested and completed for each action, the
	// parameters set and cleared.
	var log1 struct {
		Events []struct{ Type string }
	}
	h.getJSON("/api/v1/events?stream=machine/"+m.ID+"&limit=1000", &log1)
	count := map[string]int{}
	for _, ev := range log1.Events {
		count[ev.Type]++
	}
	if count[events.TypePowerActionRequested] != 6 || count[events.TypePowerParametersSet] != 5 || count[events.TypePowerParametersCleared] != 1 {
		t.Errorf("events of the machine: %v", count)
	}
	h.eventually(5*time.Second, "every completion logged", func() error {
		log1.Events = nil
		h.getJSON("/api/v1/events?stream=machine/"+m.ID+"&limit=1000", &log1)
		n := 0
		for _, ev := range log1.Events {
			if ev.Type == events.TypePowerActionCompleted {
				n++
			}
		}
		if n != 6 {
			return fmt.Errorf("%d power_action_completed, want 6", n)
		}
		return nil
	})

	// The passwords are nowhere but in the power requests to the one
	// rack: not in an event, the audit log, a projection, a log line, an
	// API response or any other NATS message.
	for _, pw := range []string{secret, wrong} {
		h.secretOnlyInPowerRequests(pw, logs.String(), tap, r.ID())
		for _, resp := range responses {
			if strings.Contains(resp, pw) {
				t.Errorf("password %s in an API response: %s", pw, resp)
			}
		}
	}
	if !strings.Contains(h.dump("audit_log"), fingerprint) {
		t.Errorf("the audit log does not show the password's fingerprint")
	}
}

// secretOnlyInPowerRequests checks that pw is in no table, not in logs,
// and on NATS only in power requests to rack rackID, which it was sent in.
func (h *harness) secretOnlyInPowerRequests(pw, logs string, tap *natsTap, rackID string) {
	t := h.t
	t.Helper()
	for _, table := range []string{"events", "outbox", "audit_log", "machine_power", "sealed_secrets", "machines", "power_lifecycle"} {
		if s := h.dump(table); strings.Contains(s, pw) {
			t.Errorf("password %s in table %s", pw, table)
		}
	}
	if strings.Contains(logs, pw) {
		t.Errorf("password %s in the log", pw)
	}
	subjects := tap.holding(pw)
	if len(subjects) == 0 {
		t.Errorf("password %s never sent to the rack", pw)
	}
	for _, s := range subjects {
		if s != events.RackRPCSubject(rackID, events.MethodPower) {
			t.Errorf("password %s in a NATS message on %s", pw, s)
		}
	}
}

// TestPowerFailures: each way a BMC fails is an API error by its
// outcome, with the rack's reason, and shows on the machine. The BMCs
// are an HTTP server behind the rack's webhook driver.
func TestPowerFailures(t *testing.T) {
	h := startRegion(t)
	r := powerRack(t, h, testLogger(), 2*time.Second)
	bmc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/denied":
			http.Error(w, "bad credentials", http.StatusUnauthorized)
		case "/broken":
			http.Error(w, "BMC on fire", http.StatusInternalServerError)
		case "/hang":
			select {
			case <-req.Context().Done():
			case <-time.After(20 * time.Second):
			}
		}
	}))
	defer bmc.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "pw-fail", "macs": []string{"52:54:00:ee:03:01"}, "arch": "amd64",
		"boot_rack_id": r.ID()}, &m); code != 201 {
		t.Fatalf("create machine: %d %+v", code, m)
	}
	path := "/api/v1/machines/" + m.ID + "/power"
	for _, tc := range []struct {
		name, url string
		code      int
		says      []string
		outcome   string
	}{
		// Not 401: the API caller's token was fine, the BMC refused.
		{"the BMC refuses the credentials", bmc.URL + "/denied", 409, []string{"auth_failed", "401", "refused the stored credentials"}, events.PowerOutcomeAuthFailed},
		{"the BMC fails", bmc.URL + "/broken", 409, []string{"failed", "BMC on fire"}, events.PowerOutcomeFailed},
		{"the BMC is unreachable", closed, 503, []string{"unreachable", r.ID()}, events.PowerOutcomeUnreachable},
		{"the BMC hangs", bmc.URL + "/hang", 504, []string{"timeout"}, events.PowerOutcomeTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := map[string]any{"driver": "webhook", "username": "admin", "password": "pw", "extra": map[string]string{"url": tc.url}}
			if code := h.do("PUT", path, set, nil); code != 200 {
				t.Fatalf("set: %d", code)
			}
			var e powerView
			if code := h.do("POST", path+"/on", nil, &e); code != tc.code {
				t.Fatalf("%d %+v, want %d", code, e, tc.code)
			}
			for _, s := range tc.says {
				if !strings.Contains(e.Error.Message, s) {
					t.Errorf("error %q does not say %q", e.Error.Message, s)
				}
			}
			h.eventually(5*time.Second, "the outcome on the machine", func() error {
				var got struct {
					PowerState   string `json:"power_state"`
					PowerOutcome string `json:"power_outcome"`
					PowerError   string `json:"power_error"`
				}
				h.getJSON("/api/v1/machines/"+m.ID, &got)
				if got.PowerState != events.PowerStateUnknown || got.PowerOutcome != tc.outcome || got.PowerError == "" {
					return fmt.Errorf("machine shows %+v", got)
				}
				return nil
			})
		})
	}
}
