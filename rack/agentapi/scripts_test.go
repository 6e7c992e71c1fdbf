package agentapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/agentapi"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestScriptEndpoints: GET scripts passes the region's answer on to the
// agent of the machine's boot alone, for its operation, and says so when
// the region is away; POST script publishes a valid result and refuses a
// malformed one.
func TestScriptEndpoints(t *testing.T) {
	var mu sync.Mutex
	var asked []events.CommissioningScriptsRequest
	answer := func(context.Context) (events.CommissioningScriptsReply, error) {
		return events.CommissioningScriptsReply{Scripts: []events.CommissioningScript{{Name: "10-hello", Content: "echo hi",
			TimeoutSeconds: 300, SHA256: events.ScriptSHA256("echo hi")}}}, nil
	}
	f := start(t, agentapi.Config{Scripts: func(ctx context.Context, req events.CommissioningScriptsRequest) (events.CommissioningScriptsReply, error) {
		mu.Lock()
		asked = append(asked, req)
		a := answer
		mu.Unlock()
		return a(ctx)
	}})
	ok := f.base + "/agent/" + machineID + "/" + f.cred + "/"

	code, body := get(t, ok+"scripts")
	var reply events.CommissioningScriptsReply
	if code != 200 || json.Unmarshal([]byte(body), &reply) != nil || len(reply.Scripts) != 1 || reply.Scripts[0].Content != "echo hi" {
		t.Fatalf("scripts: %d %s", code, body)
	}
	if len(asked) != 1 || asked[0] != (events.CommissioningScriptsRequest{MachineID: machineID, OperationID: opID}) {
		t.Fatalf("the region was asked %+v", asked)
	}
	for _, u := range []string{f.base + "/agent/" + machineID + "/wrong/scripts", f.base + "/agent/" + otherID + "/" + f.cred + "/scripts"} {
		if code, _ := get(t, u); code != 403 {
			t.Fatalf("GET %s: %d, want 403", u, code)
		}
	}
	if len(asked) != 1 {
		t.Fatalf("the region was asked for a refused agent: %+v", asked)
	}
	for _, tt := range []struct {
		err    error
		status int
		reason string
	}{
		{rackplane.Errorf(rackplane.EUNAVAILABLE, "not connected to NATS"), 503, "region_away"},
		{rackplane.Errorf(rackplane.ETIMEOUT, "no answer"), 503, "region_away"},
		{rackplane.Errorf(rackplane.EFORBIDDEN, "another operation"), 403, "region_refused"},
		{rackplane.Errorf(rackplane.EINVALID, "the scripts together are over 786432 bytes"), 502, "region_error"},
	} {
		mu.Lock()
		answer = func(context.Context) (events.CommissioningScriptsReply, error) {
			return events.CommissioningScriptsReply{}, tt.err
		}
		mu.Unlock()
		before := testutil.ToFloat64(f.refused.WithLabelValues(agentapi.Endpoint, tt.reason))
		code, body := get(t, ok+"scripts")
		if code != tt.status || testutil.ToFloat64(f.refused.WithLabelValues(agentapi.Endpoint, tt.reason)) != before+1 {
			t.Fatalf("region says %v: %d %q", tt.err, code, body)
		}
		if code == 503 && !strings.Contains(body, "cannot reach the region") {
			t.Fatalf("503 says %q", body)
		}
	}

	long := strings.Repeat("x", events.MaxScriptOutput) + `the end\n`
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"result", `{"name":"10-hello","exit_code":0,"output":"hello\n","duration_ms":12}`, 204},
		{"killed", `{"name":"20-slow","exit_code":-1,"output":"","truncated":false,"duration_ms":1000}`, 204},
		{"long output", `{"name":"30-long","exit_code":1,"output":"` + long + `","duration_ms":1}`, 204},
		{"bad name", `{"name":"../x","exit_code":0,"output":"","duration_ms":1}`, 400},
		{"no exit code", `{"name":"x","output":"","duration_ms":1}`, 400},
		{"exit code", `{"name":"x","exit_code":300,"output":"","duration_ms":1}`, 400},
		{"too large", `{"name":"x","exit_code":0,"output":"` + strings.Repeat("y", agentapi.MaxScriptBody) + `"}`, 413},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(f.published())
			code, msg := post(t, ok+"script", tt.body)
			if code != tt.status {
				t.Fatalf("%d %s, want %d", code, msg, tt.status)
			}
			evs := f.published()
			if tt.status != 204 {
				if len(evs) != n {
					t.Fatalf("published %+v", evs[n:])
				}
				return
			}
			var d events.AgentScriptReported
			if len(evs) != n+1 || evs[n].Type != events.TypeAgentScriptReported || evs[n].Subject != events.MachineStreamName(machineID) ||
				evs[n].DecodeData(&d) != nil || d.OperationID != opID {
				t.Fatalf("published %+v", evs[n:])
			}
			if tt.name == "long output" && (!d.Truncated || len(d.Output) != events.MaxScriptOutput || !strings.HasSuffix(d.Output, "the end\n")) {
				t.Fatalf("long output kept as %d bytes, truncated %v", len(d.Output), d.Truncated)
			}
		})
	}
}

// TestNoScriptsOnARackWithout: a rack not set up to ask the region for
// scripts answers 404, as one that predates them.
func TestNoScriptsOnARackWithout(t *testing.T) {
	f := start(t, agentapi.Config{})
	if code, _ := get(t, f.base+"/agent/"+machineID+"/"+f.cred+"/scripts"); code != 404 {
		t.Fatalf("GET scripts: %d, want 404", code)
	}
}
