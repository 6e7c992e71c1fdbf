package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/agent"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/machinecred"
)

// scriptRack is a rack's agent endpoints (the real handler) whose region
// answers with scripts, or err.
type scriptRack struct {
	url string
	mu  sync.Mutex
	evs []events.Event
}

func startScriptRack(t *testing.T, scripts []events.CommissioningScript, err error) *scriptRack {
	t.Helper()
	keys, kerr := machinecred.New(bytes.Repeat([]byte{9}, 32))
	if kerr != nil {
		t.Fatal(kerr)
	}
	r := &scriptRack{}
	h, herr := agentapi.New(agentapi.Config{RackID: "0190f0e0-0000-7000-8000-0000000000ee",
		Boot: func(id string) (events.BootDecision, bool) {
			return events.BootDecision{MachineID: id, Purpose: events.BootPurposeCommission, DeploymentID: opID}, id == machineID
		},
		Check:   keys.Check,
		Publish: func(e events.Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() },
		Scripts: func(_ context.Context, req events.CommissioningScriptsRequest) (events.CommissioningScriptsReply, error) {
			if req.MachineID != machineID || req.OperationID != opID {
				return events.CommissioningScriptsReply{}, rackplane.Errorf(rackplane.EFORBIDDEN, "not this one")
			}
			return events.CommissioningScriptsReply{Scripts: scripts}, err
		},
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"}),
		Logger:  slog.New(slog.DiscardHandler), Rate: 1000, Burst: 1000})
	if herr != nil {
		t.Fatal(herr)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/agent/" + machineID + "/" + keys.For(machineID, opID)
	return r
}

func script(name, content string, timeout int) events.CommissioningScript {
	return events.CommissioningScript{Name: name, Content: content, TimeoutSeconds: timeout, SHA256: events.ScriptSHA256(content)}
}

// reports returns the scripts' results and the outcome published.
func (r *scriptRack) reports(t *testing.T) ([]events.AgentScriptReported, []string, events.AgentFinished) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var res []events.AgentScriptReported
	var steps []string
	var fin events.AgentFinished
	for _, e := range r.evs {
		switch e.Type {
		case events.TypeAgentScriptReported:
			var d events.AgentScriptReported
			if err := e.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			res = append(res, d)
		case events.TypeAgentStepReported:
			var d events.AgentStepReported
			if err := e.DecodeData(&d); err != nil {
				t.Fatal(err)
			}
			steps = append(steps, d.Name+" "+d.State)
		case events.TypeAgentFinished:
			if err := e.DecodeData(&fin); err != nil {
				t.Fatal(err)
			}
		}
	}
	return res, steps, fin
}

// TestScripts: the agent runs the scripts in order, each with its
// machine and name in its environment, reports each, and the first that
// fails (or outlives its timeout, its children with it) ends the
// commissioning with its name and the end of its output.
func TestScripts(t *testing.T) {
	hello := script("10-hello", `echo "hello from $RACKPLANE_SCRIPT_NAME on $RACKPLANE_MACHINE_ID"; echo to stderr >&2`, 10)
	tests := []struct {
		name    string
		scripts []events.CommissioningScript
		success bool
		ran     []int  // exit codes reported, in order
		message string // in the outcome
		within  time.Duration
	}{
		{"none", nil, true, nil, "", 10 * time.Second},
		{"all pass", []events.CommissioningScript{hello, script("20-true", "true", 10)}, true, []int{0, 0}, "", 10 * time.Second},
		{"the second fails", []events.CommissioningScript{hello, script("20-fail", "seq 1 2000\necho 'disk check failed: RP-MARK'\nexit 3", 10),
			script("30-never", "echo never", 10)}, false, []int{0, 3},
			"commissioning script 20-fail exited 3: ", 10 * time.Second},
		{"timed out, children too", []events.CommissioningScript{script("10-slow", "echo started; sleep 60 & sleep 60", 1)}, false, []int{-1},
			"commissioning script 10-slow timed out after 1s: started", 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startScriptRack(t, tt.scripts, nil)
			start := time.Now()
			if err := agent.Run(context.Background(), agent.Config{URL: r.url, Root: fixture, Backoff: time.Millisecond, ScriptDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > tt.within {
				t.Fatalf("took %v", took)
			}
			res, steps, fin := r.reports(t)
			if len(res) != len(tt.ran) {
				t.Fatalf("results %+v, want exit codes %v", res, tt.ran)
			}
			for i, code := range tt.ran {
				if res[i].ExitCode != code || res[i].Name != tt.scripts[i].Name || res[i].OperationID != opID {
					t.Fatalf("result %d: %+v, want %s exit %d", i, res[i], tt.scripts[i].Name, code)
				}
			}
			if fin.Success != tt.success || !strings.Contains(fin.Message, tt.message) || len(fin.Message) > events.MaxAgentMessage {
				t.Fatalf("outcome %+v, want success %v and %q", fin, tt.success, tt.message)
			}
			if len(tt.ran) > 0 && tt.scripts[0].Name == "10-hello" {
				if want := "hello from 10-hello on " + machineID + "\nto stderr\n"; res[0].Output != want {
					t.Fatalf("output %q, want %q", res[0].Output, want)
				}
			}
			if tt.name == "the second fails" {
				if !strings.HasSuffix(fin.Message, "1999\n2000\ndisk check failed: RP-MARK") || !strings.Contains(strings.Join(steps, ","), "script:20-fail failed") {
					t.Fatalf("outcome %q, steps %v", fin.Message, steps)
				}
				if res[1].Truncated || !strings.HasPrefix(res[1].Output, "1\n2\n") {
					t.Fatalf("output of 20-fail: %d bytes, truncated %v", len(res[1].Output), res[1].Truncated)
				}
			}
		})
	}
}

// TestScriptOutputTail: a script's output is kept as its last 16 KiB.
func TestScriptOutputTail(t *testing.T) {
	r := startScriptRack(t, []events.CommissioningScript{script("10-loud", "seq 1 100000; echo last line", 30)}, nil)
	if err := agent.Run(context.Background(), agent.Config{URL: r.url, Root: fixture, Backoff: time.Millisecond, ScriptDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	res, _, fin := r.reports(t)
	if len(res) != 1 || !res[0].Truncated || len(res[0].Output) > events.MaxScriptOutput || len(res[0].Output) < events.MaxScriptOutput-8 ||
		!strings.HasSuffix(res[0].Output, "100000\nlast line\n") || !fin.Success {
		t.Fatalf("result %d bytes, truncated %v, outcome %+v", len(res[0].Output), res[0].Truncated, fin)
	}
}

// TestScriptsUnavailable: while the rack cannot reach the region the
// agent tries again, and then fails the commissioning saying so.
func TestScriptsUnavailable(t *testing.T) {
	r := startScriptRack(t, nil, rackplane.Errorf(rackplane.EUNAVAILABLE, "not connected to NATS"))
	if err := agent.Run(context.Background(), agent.Config{URL: r.url, Root: fixture, Attempts: 2, Backoff: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	res, _, fin := r.reports(t)
	if len(res) != 0 || fin.Success || !strings.Contains(fin.Message, "commissioning scripts not fetched") || !strings.Contains(fin.Message, "503") {
		t.Fatalf("results %+v, outcome %+v", res, fin)
	}
}

func TestParseScripts(t *testing.T) {
	ok := script("10-a", "true", 10)
	enc := func(list ...events.CommissioningScript) string {
		b, _ := json.Marshal(map[string]any{"scripts": list})
		return string(b)
	}
	bad := ok
	bad.SHA256 = strings.Repeat("0", 64)
	many := make([]events.CommissioningScript, events.MaxScripts+1)
	for i := range many {
		many[i] = script(strings.Repeat("a", i+1)[:min(i+1, 60)]+string(rune('a'+i%26)), "true", 1)
	}
	for _, tt := range []struct {
		name, body string
		ok         bool
	}{
		{"two", enc(ok, script("20-b", "exit 0", 1)), true},
		{"none", `{"scripts":[]}`, true},
		{"no list", `{}`, false},
		{"null list", `{"scripts":null}`, false},
		{"out of order", enc(script("20-b", "exit 0", 1), ok), false},
		{"twice", enc(ok, ok), false},
		{"bad name", enc(script("../x", "true", 1)), false},
		{"wrong digest", enc(bad), false},
		{"no timeout", enc(script("10-a", "true", 0)), false},
		{"empty", enc(script("10-a", "", 1)), false},
		{"too many", enc(many...), false},
		{"trailing", enc(ok) + "{}", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := agent.ParseScripts([]byte(tt.body)); (err == nil) != tt.ok {
				t.Fatalf("ok %v, want %v: %v", err == nil, tt.ok, err)
			}
		})
	}
}

// FuzzParseScripts: what ParseScripts takes is a list the agent can run:
// script names in order, each once, contents that hash to their sums.
func FuzzParseScripts(f *testing.F) {
	f.Add(`{"scripts":[{"name":"10-a","content":"true","timeout_seconds":1,"sha256":"` + events.ScriptSHA256("true") + `"}]}`)
	f.Add(`{"scripts":[]}`)
	f.Add(`{"scripts":[{"name":"A"}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		list, err := agent.ParseScripts([]byte(body))
		if err != nil {
			return
		}
		if len(list) > events.MaxScripts {
			t.Fatalf("%d scripts", len(list))
		}
		for i, s := range list {
			if !events.ValidScriptName(s.Name) || (i > 0 && s.Name <= list[i-1].Name) || events.ScriptSHA256(s.Content) != s.SHA256 ||
				s.Content == "" || len(s.Content) > events.MaxScriptContent || s.TimeoutSeconds < 1 || s.TimeoutSeconds > events.MaxScriptTimeout {
				t.Fatalf("taken: %+v", s)
			}
		}
	})
}
