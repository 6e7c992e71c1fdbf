package power

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/internal/scriptrun/scriptruntest"
)

// rpcRack serves m's power rpc on an embedded NATS server, as a rack
// does, and returns a client connection of the region.
func rpcRack(t testing.TB, m testManager) *nats.Conn {
	t.Helper()
	ns := natsserver.StartTest(t)
	// The manager's logger: one handler, so one lock, over the buffer.
	srv := rpc.NewServer(ns.Connect(), testRack, m.Manager.log, m.cfg.Concurrency+8, 2*m.cfg.Timeout+5*time.Second)
	t.Cleanup(srv.Close)
	if err := m.RegisterRPC(srv, testRack); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterRPC(srv, "0190a3c2-3333-7000-8000-00000000ffff"); rackplane.ErrorCode(err) != rackplane.EINVALID {
		t.Errorf("registering for another rack: %v", err)
	}
	return ns.Connect()
}

// call sends body (raw JSON, or a value to encode) to the power subject.
func call(t *testing.T, nc *nats.Conn, body any) (Reply, error) {
	t.Helper()
	raw, ok := body.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, events.RackRPCSubject(testRack, events.MethodPower), raw)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	var r rpc.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("reply %s: %v", m.Data, err)
	}
	var reply Reply
	if err := r.Decode(&reply); err != nil {
		return Reply{}, err
	}
	checkReply(t, reply)
	return reply, nil
}

func TestRPC(t *testing.T) {
	m := newManager(t, Config{})
	nc := rpcRack(t, m)
	addr := bmcFile(t, t.TempDir(), "bmc", "on")
	good := func() map[string]any {
		return map[string]any{"machine_id": "m-1", "driver": "filebmc", "action": "status",
			"parameters": map[string]any{"address": addr, "password": "rpc-Secret-1"}}
	}
	r, err := call(t, nc, good())
	if err != nil || !r.OK || r.State != events.PowerStateOn || r.MachineID != "m-1" || r.Action != events.PowerStatus {
		t.Fatalf("good request: %+v, %v", r, err)
	}
	cases := []struct {
		name   string
		body   any
		errHas string
	}{
		{"not JSON", []byte("{"), "not one JSON object"},
		{"empty", []byte(""), "not one JSON object"},
		{"an array", []string{"status"}, "power request breaks power_rpc.request.v1: /: type"},
		{"unknown field", func() map[string]any { b := good(); b["script"] = "../x"; return b }(), "/: additionalProperties"},
		{"unknown action", func() map[string]any { b := good(); b["action"] = "reset"; return b }(), "/action: enum"},
		{"driver path", func() map[string]any { b := good(); b["driver"] = "../filebmc"; return b }(), "/driver: pattern"},
		{"set_boot without device", func() map[string]any { b := good(); b["action"] = "set_boot"; return b }(), "/: required"},
		{"password with a line break", func() map[string]any {
			b := good()
			b["parameters"].(map[string]any)["password"] = "rpc-Secret-1\nrm -rf /"
			return b
		}(), "/parameters/password: pattern"},
		{"too large", func() map[string]any {
			b := good()
			b["parameters"].(map[string]any)["extra"] = map[string]any{"a": strings.Repeat("x", 4000), "b": strings.Repeat("x", 4000),
				"c": strings.Repeat("x", 4000), "d": strings.Repeat("x", 4000), "e": strings.Repeat("x", 4000), "f": strings.Repeat("x", 4000),
				"g": strings.Repeat("x", 4000), "h": strings.Repeat("x", 4000), "i": strings.Repeat("x", 4000), "j": strings.Repeat("x", 4000),
				"k": strings.Repeat("x", 4000), "l": strings.Repeat("x", 4000), "m": strings.Repeat("x", 4000), "n": strings.Repeat("x", 4000),
				"o": strings.Repeat("x", 4000), "p": strings.Repeat("x", 4000), "q": strings.Repeat("x", 4000)}
			return b
		}(), "limit 65536"},
		{"two objects", append(mustJSON(t, good()), []byte(` {}`)...), "not one JSON object"},
	}
	before := len(m.pub.completed(t))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := call(t, nc, tc.body)
			if rackplane.ErrorCode(err) != rackplane.EINVALID || !strings.Contains(rackplane.ErrorMessage(err), tc.errHas) {
				t.Errorf("error %v, want invalid with %q", err, tc.errHas)
			}
			if strings.Contains(rackplane.ErrorMessage(err), "rpc-Secret-1") {
				t.Errorf("the refusal quotes the password: %v", err)
			}
		})
	}
	if n := len(m.pub.completed(t)); n != before {
		t.Errorf("%d events for refused requests", n-before)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSecretsNeverLeak sends power requests through NATS that fail every
// way a driver can fail, with a password that scripts, endpoints and
// templates do their best to repeat, and looks for it in every NATS
// message but the requests themselves, in every event and in the log.
func TestSecretsNeverLeak(t *testing.T) {
	const secret = "Leak-Me-If-U-Can-881" // IPMI 2.0 takes 20 bytes at most
	m := newManager(t, Config{Settings: Settings{Timeout: 3 * time.Second}})
	nc := rpcRack(t, m)
	var mu sync.Mutex
	var leaks []string
	var seen int
	sub, err := nc.Subscribe(">", func(msg *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		seen++
		if bytes.Contains(msg.Data, []byte(secret)) && msg.Subject != events.RackRPCSubject(testRack, events.MethodPower) {
			leaks = append(leaks, msg.Subject+": "+string(msg.Data))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	dir := t.TempDir()
	locked := bmcFile(t, dir, "locked", "off")
	scriptruntest.WriteFile(t, locked+".password", "the-right-one\n", 0o600)
	hang := bmcFile(t, dir, "hang", "hang")
	// A driver whose scripts repeat the password and fail.
	echoSearch := t.TempDir()
	echo := filepath.Join(echoSearch, "echo")
	if err := os.Mkdir(echo, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"power-on", "power-off", "power-status"} {
		scriptruntest.WriteFile(t, filepath.Join(echo, s), "#!/bin/sh\necho \"user $POWER_USER pass $POWER_PASSWORD\"\necho \"$POWER_PASSWORD\" >&2\necho \"$POWER_PASSWORD\"\nexit 1\n", 0o755)
	}
	m.cfg.SearchPath = append(m.cfg.SearchPath, echoSearch)
	m.Rescan()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pw, _ := r.BasicAuth()
		http.Error(w, "I will not take "+pw+" from "+r.URL.String(), http.StatusForbidden)
	}))
	defer web.Close()
	p := func(addr string, extra map[string]string) map[string]any {
		p := map[string]any{"address": addr, "username": "admin", "password": secret}
		if extra != nil {
			p["extra"] = extra
		}
		return p
	}
	reqs := []map[string]any{
		{"machine_id": "m-locked", "driver": "filebmc", "action": "on", "parameters": p(locked, nil)},
		{"machine_id": "m-hang", "driver": "filebmc", "action": "status", "parameters": p(hang, nil)},
		{"machine_id": "m-echo", "driver": "echo", "action": "status", "parameters": p("x", nil)},
		{"machine_id": "m-echo", "driver": "echo", "action": "cycle", "parameters": p("x", nil)},
		{"machine_id": "m-web", "driver": "webhook", "action": "on", "parameters": p("1", map[string]string{
			"url": web.URL + "/on?key={{.Password}}", "body": `{"password": {{json .Password}}}`})},
		{"machine_id": "m-web", "driver": "webhook", "action": "status", "parameters": p("1", map[string]string{
			"url": web.URL + "/{{.Password}}/{{.Nope}}"})},
		{"machine_id": "m-web", "driver": "webhook", "action": "off", "parameters": p("1", map[string]string{
			"url": "http://" + closedPort(t) + "/?pw={{.Password}}"})},
		{"machine_id": "m-vm", "driver": "qemu", "action": "on", "parameters": p("/run/nope.qmp", nil)},
		{"machine_id": "m-x", "driver": "nosuch", "action": "on", "parameters": p("x", nil)},
		{"machine_id": "m-bad", "driver": "filebmc", "action": "reset", "parameters": p(locked, nil)},
	}
	if !testing.Short() {
		needTool(t, "ipmitool", "ipmitool")
		reqs = append(reqs, map[string]any{"machine_id": "m-ipmi", "driver": "ipmi", "action": "on",
			"parameters": p("127.0.0.1", map[string]string{"retries": "1", "retry_interval": "1"})})
	}
	failed := 0
	for _, body := range reqs {
		r, err := call(t, nc, body)
		if err == nil && !r.OK {
			failed++
		}
		if err == nil && r.OK {
			t.Errorf("%v succeeded", body)
		}
	}
	if failed != len(reqs)-1 {
		t.Errorf("%d of %d requests failed with a reply, want all but the one the schema refuses", failed, len(reqs))
	}
	// The rack's own log of the rpc server and the manager, the events.
	for where, text := range map[string]string{"log": m.log.String(), "events": string(m.pub.raw(t))} {
		if strings.Contains(text, secret) {
			t.Errorf("the password is in the %s:\n%s", where, text)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, l := range leaks {
		t.Errorf("the password crossed NATS outside a request: %s", l)
	}
	// What was masked shows that there was something to mask.
	if !strings.Contains(string(m.pub.raw(t)), "pass ********") {
		t.Errorf("no masked password in the events: the scripts did not repeat it?\n%s", m.pub.raw(t))
	}
	t.Logf("%d requests, %d NATS messages, %d events, %d bytes of log: no password", len(reqs), seen, len(m.pub.completed(t)), len(m.log.String()))
}
