package power

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/scriptrun"
)

// pdu is a power distribution unit's HTTP API, as a webhook driver
// meets one: outlets switched by POST /outlets/{n}/{on|off|cycle},
// read by GET /outlets/{n} ({"state": "on"}), set to boot by PUT
// /outlets/{n}/boot with {"device": …}; basic authentication.
type pdu struct {
	mu      sync.Mutex
	outlets map[string]string
	boot    map[string]string
	bodies  []string
}

func newPDU(t *testing.T, user, password string) (*pdu, *httptest.Server) {
	p := &pdu{outlets: map[string]string{"1": "off", "2": "on"}, boot: map[string]string{}}
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			u, pw, ok := r.BasicAuth()
			if !ok || u != user || pw != password {
				http.Error(w, "bad credentials for "+u+":"+pw, http.StatusUnauthorized)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /outlets/{n}/{action}", auth(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.bodies = append(p.bodies, string(b))
		switch a := r.PathValue("action"); a {
		case "on", "cycle":
			p.outlets[r.PathValue("n")] = "on"
		case "off", "soft_off":
			p.outlets[r.PathValue("n")] = "off"
		default:
			http.Error(w, "no action "+a, http.StatusBadRequest)
		}
	}))
	mux.HandleFunc("GET /outlets/{n}", auth(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		st, ok := p.outlets[r.PathValue("n")]
		if !ok {
			http.Error(w, "no such outlet", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"outlet": r.PathValue("n"), "state": st})
	}))
	mux.HandleFunc("GET /text/{n}", auth(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		fmt.Fprintf(w, "  %s\n", strings.ToUpper(p.outlets[r.PathValue("n")]))
	}))
	mux.HandleFunc("PUT /outlets/{n}/boot", auth(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Device string }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.boot[r.PathValue("n")] = body.Device
	}))
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	mux.HandleFunc("GET /elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/outlets/1", http.StatusFound)
	})
	mux.HandleFunc("POST /broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "relay stuck on outlet; password was "+password, http.StatusInternalServerError)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return p, srv
}

func (p *pdu) outlet(n string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outlets[n]
}

func TestWebhookDriver(t *testing.T) {
	const user, password = "ops", "pdu-secret-77"
	p, srv := newPDU(t, user, password)
	m := newManager(t, Config{Settings: Settings{Timeout: 2 * time.Second}})
	base := srv.URL
	// The outlet is the address; one URL template serves on, off and
	// cycle, status and set_boot have their own.
	params := func(extra map[string]string) events.PowerParameters {
		e := map[string]string{
			"url":             base + "/outlets/{{.Address}}/{{.Action}}",
			"url_status":      base + "/outlets/{{.Address}}",
			"url_set_boot":    base + "/outlets/{{.Address}}/boot",
			"method_set_boot": "PUT",
			"body":            `{"machine": {{json .Machine}}}`,
			"body_set_boot":   `{"device": {{json .BootDevice}}}`,
		}
		for k, v := range extra {
			e[k] = v
		}
		return events.PowerParameters{Address: "1", Username: user, Password: password, Extra: e}
	}
	cases := []actionCase{
		{name: "status off", action: events.PowerStatus, params: params(nil), state: "off", outcome: "ok"},
		{name: "on", action: events.PowerOn, params: params(nil), state: "on", outcome: "ok",
			check: func(t *testing.T) { want(t, p.outlet("1"), "on") }},
		{name: "status on", action: events.PowerStatus, params: params(nil), state: "on", outcome: "ok"},
		{name: "status as plain text", action: events.PowerStatus, params: params(map[string]string{"url_status": base + "/text/{{.Address}}"}),
			state: "on", outcome: "ok"},
		{name: "status from a named field", action: events.PowerStatus, params: params(map[string]string{"status_field": "outlet"}),
			state: "unknown", outcome: "failed", errHas: `member "outlet" of the answer is "1", want on or off`},
		{name: "off", action: events.PowerOff, params: params(nil), state: "off", outcome: "ok",
			check: func(t *testing.T) { want(t, p.outlet("1"), "off") }},
		{name: "cycle", action: events.PowerCycle, params: params(nil), state: "on", outcome: "ok"},
		{name: "set boot", action: events.PowerSetBoot, device: "pxe", params: params(nil), state: "unknown", outcome: "ok",
			check: func(t *testing.T) {
				p.mu.Lock()
				defer p.mu.Unlock()
				want(t, p.boot["1"], "pxe")
				want(t, p.bodies[len(p.bodies)-1], `{"machine": "m-webhook"}`)
			}},
		{name: "soft off", action: events.PowerSoftOff, params: params(nil), state: "unknown", outcome: "ok"},
		{name: "wrong password", action: events.PowerOn, params: func() events.PowerParameters {
			q := params(nil)
			q.Password = "not-" + password
			return q
		}(), state: "unknown", outcome: "auth_failed", errHas: "401 Unauthorized"},
		{name: "endpoint fails", action: events.PowerOn, params: params(map[string]string{"url_on": base + "/broken"}),
			state: "unknown", outcome: "failed", errHas: "500 Internal Server Error: \"relay stuck on outlet; password was " + scriptrun.Mask + "\""},
		{name: "no such outlet", action: events.PowerStatus, params: func() events.PowerParameters {
			q := params(nil)
			q.Address = "9"
			return q
		}(), state: "unknown", outcome: "failed", errHas: "404 Not Found"},
		{name: "redirect not followed", action: events.PowerStatus, params: params(map[string]string{"url_status": base + "/elsewhere"}),
			state: "unknown", outcome: "failed", errHas: "302 Found"},
		{name: "endpoint hangs", action: events.PowerStatus, params: params(map[string]string{"url_status": base + "/slow"}),
			state: "unknown", outcome: "timeout", errHas: "did not finish within 2s"},
		{name: "endpoint down", action: events.PowerStatus, params: params(map[string]string{"url_status": "http://" + closedPort(t) + "/x"}),
			state: "unknown", outcome: "unreachable", errHas: "connection refused"},
		{name: "password in the URL is masked", action: events.PowerOn,
			params: params(map[string]string{"url_on": "http://" + closedPort(t) + "/on?key={{.Password}}"}),
			state:  "unknown", outcome: "unreachable", errHas: "key=" + scriptrun.Mask},
		{name: "no URL for the action", action: events.PowerSoftOff, params: events.PowerParameters{Address: "1",
			Extra: map[string]string{"url_on": base + "/outlets/1/on"}}, state: "unknown", outcome: "unsupported", errHas: "give extra url_soft_off or url"},
		{name: "template does not parse", action: events.PowerOn, params: params(map[string]string{"body_off": "{{.Nope"}),
			state: "unknown", outcome: "invalid", errHas: "webhook body_off template"},
		{name: "template names nothing known", action: events.PowerOn, params: params(map[string]string{"body": "{{.Secret}}"}),
			state: "unknown", outcome: "invalid", errHas: "can't evaluate field Secret"},
		{name: "unknown extra", action: events.PowerOn, params: params(map[string]string{"header": "x"}),
			state: "unknown", outcome: "invalid", errHas: "the webhook driver has no extra header"},
		{name: "not an http URL", action: events.PowerOn, params: params(map[string]string{"url_on": "file:///etc/passwd"}),
			state: "unknown", outcome: "invalid", errHas: "not an http or https URL"},
		{name: "bad method", action: events.PowerOn, params: params(map[string]string{"method": "TRACE"}),
			state: "unknown", outcome: "invalid", errHas: "want GET, POST, PUT, PATCH or DELETE"},
	}
	runCases(t, m, DriverWebhook, cases, []string{password}, nil)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestParseWebhookStatus(t *testing.T) {
	for _, tc := range []struct {
		body, field, state, err string
	}{
		{"on", "", "on", ""},
		{" OFF \n", "", "off", ""},
		{`{"state": "on"}`, "", "on", ""},
		{`{"power_state": "Off", "state": null}`, "", "", `member "state" of the answer is neither a string nor a boolean`},
		{`{"power_state": "Off"}`, "", "off", ""},
		{`{"power": true}`, "", "on", ""},
		{`{"status": false}`, "", "off", ""},
		{`{"relay": {"x": 1}, "status": "on"}`, "", "on", ""},
		{`{"relay": "on"}`, "relay", "on", ""},
		{`{"relay": "on"}`, "", "", "none of the members state, power_state, power, status"},
		{`{"state": "standby"}`, "", "", `member "state" of the answer is "standby", want on or off`},
		{`{"state": 1}`, "", "", "neither a string nor a boolean"},
		{`{"state": "on"`, "", "", "not a JSON object"},
		{`["on"]`, "", "", `the answer is "[\"on\"]", want on or off`},
		{"", "", "", `the answer is "", want on or off`},
		{"onward", "", "", "want on or off"},
	} {
		state, err := ParseWebhookStatus([]byte(tc.body), tc.field)
		if state != tc.state || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseWebhookStatus(%q, %q) = %q, %v; want %q, %q", tc.body, tc.field, state, err, tc.state, tc.err)
		}
	}
}
