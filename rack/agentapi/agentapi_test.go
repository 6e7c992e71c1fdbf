package agentapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/inventory"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/machinecred"
)

const (
	rackID    = "0190f0e0-0000-7000-8000-0000000000ee"
	machineID = "0190f0e0-0000-7000-8000-0000000000aa"
	otherID   = "0190f0e0-0000-7000-8000-0000000000bb"
	opID      = "0190f0e0-0000-7000-8000-0000000000c1"
	eraseID   = "0190f0e0-0000-7000-8000-0000000000dd"
	eraseOp   = "0190f0e0-0000-7000-8000-0000000000c2"
)

type fixture struct {
	base    string
	cred    string
	keys    *machinecred.Keyring
	refused *prometheus.CounterVec

	mu  sync.Mutex
	evs []events.Event
}

func (f *fixture) published() []events.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]events.Event(nil), f.evs...)
}

func start(t *testing.T, cfg agentapi.Config) *fixture {
	t.Helper()
	keys, err := machinecred.New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{keys: keys, cred: keys.For(machineID, opID),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"})}
	boots := map[string]events.BootDecision{
		machineID: {MAC: "52:54:00:00:00:aa", MachineID: machineID, Purpose: events.BootPurposeCommission, DeploymentID: opID},
		eraseID:   {MAC: "52:54:00:00:00:dd", MachineID: eraseID, Purpose: events.BootPurposeErase, DeploymentID: eraseOp},
	}
	cfg.RackID = rackID
	cfg.Boot = func(id string) (events.BootDecision, bool) { d, ok := boots[id]; return d, ok }
	cfg.Check = keys.Check
	cfg.Publish = func(e events.Event) { f.mu.Lock(); f.evs = append(f.evs, e); f.mu.Unlock() }
	cfg.Refused = f.refused
	cfg.Logger = slog.New(slog.DiscardHandler)
	h, err := agentapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.base = srv.URL
	return f
}

func fixtureInventory(t testing.TB) []byte {
	t.Helper()
	inv, err := inventory.Collect(filepath.Join("..", "..", "internal", "inventory", "testdata", "amd64-vm"), "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := events.EncodeInventory(inv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEndpoints: each endpoint, over real HTTP, answers the agent of the
// machine's boot and publishes its event on the machine's stream, and
// refuses everyone else or anything malformed without publishing.
func TestEndpoints(t *testing.T) {
	f := start(t, agentapi.Config{})
	inv := fixtureInventory(t)
	ok := f.base + "/agent/" + machineID + "/" + f.cred + "/"
	otherCred := f.keys.For(machineID, "0190f0e0-0000-7000-8000-0000000000c0") // an earlier operation's
	huge := `{"name":"x","state":"done","message":"` + strings.Repeat("a", 17<<10) + `"}`
	tests := []struct {
		name, url, body string
		status          int
		reason          string // of the refusal counted; "" when taken
		typ             string // of the event published
		says            string // in the answer
	}{
		{"step", ok + "step", `{"name":"inventory","state":"started","progress":0}`, 204, "", events.TypeAgentStepReported, ""},
		{"step done with a message", ok + "step", `{"name":"inventory","state":"done","message":"3 disks","progress":100,"later":"field"}`, 204, "", events.TypeAgentStepReported, ""},
		{"inventory", ok + "inventory", string(inv), 204, "", events.TypeInventoryReported, ""},
		{"done", ok + "done", `{"success":true,"message":"commissioned"}`, 204, "", events.TypeAgentFinished, ""},
		{"wrong credential", f.base + "/agent/" + machineID + "/" + otherCred + "/step", `{"name":"x","state":"done"}`, 403, "wrong_credential", "", "serve only the agent"},
		{"garbage credential", f.base + "/agent/" + machineID + "/%25%00/step", `{"name":"x","state":"done"}`, 403, "wrong_credential", "", "serve only the agent"},
		{"another machine", f.base + "/agent/" + otherID + "/" + f.cred + "/done", `{"success":true}`, 403, "no_agent_boot", "", "serve only the agent"},
		{"not a machine", f.base + "/agent/nope/" + f.cred + "/done", `{"success":true}`, 403, "not_a_machine", "", "serve only the agent"},
		{"unknown endpoint", ok + "reboot", `{}`, 404, "bad_path", "", "no such path"},
		{"more path", ok + "step/more", `{}`, 404, "bad_path", "", "no such path"},
		{"bad state", ok + "step", `{"name":"x","state":"maybe"}`, 400, "malformed", "", "want started, done or failed"},
		{"bad progress", ok + "step", `{"name":"x","state":"done","progress":101}`, 400, "malformed", "", "progress 101"},
		{"no name", ok + "step", `{"state":"done"}`, 400, "malformed", "", "name is missing"},
		{"two objects", ok + "step", `{"name":"x","state":"done"}{}`, 400, "malformed", "", "more than one JSON value"},
		{"not JSON", ok + "done", `success=true`, 400, "malformed", "", "not a JSON object"},
		{"done without success", ok + "done", `{"message":"hm"}`, 400, "malformed", "", "success is missing"},
		{"step too large", ok + "step", huge, 413, "too_large", "", "larger than 16384 bytes"},
		{"inventory too large", ok + "inventory", `{"x":"` + strings.Repeat("a", 1<<20) + `"}`, 413, "too_large", "", "larger than 1048576 bytes"},
		{"malformed inventory", ok + "inventory", strings.Replace(string(inv), `"architecture":"amd64"`, `"architecture":"vax"`, 1), 400, "malformed", "", "architecture"},
		{"inventory of another shape", ok + "inventory", `[1,2]`, 400, "malformed", "", "inventory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.published())
			var refusedBefore float64
			if tt.reason != "" {
				refusedBefore = testutil.ToFloat64(f.refused.WithLabelValues(agentapi.Endpoint, tt.reason))
			}
			status, body := post(t, tt.url, tt.body)
			if status != tt.status || !strings.Contains(body, tt.says) {
				t.Fatalf("%d %q, want %d saying %q", status, body, tt.status, tt.says)
			}
			evs := f.published()
			if tt.typ == "" {
				if len(evs) != before {
					t.Fatalf("published %s", evs[len(evs)-1].Type)
				}
				if got := testutil.ToFloat64(f.refused.WithLabelValues(agentapi.Endpoint, tt.reason)); got != refusedBefore+1 {
					t.Fatalf("refusals %s counted %v, want %v", tt.reason, got, refusedBefore+1)
				}
				if strings.Contains(body, f.cred) {
					t.Fatal("the answer holds the credential")
				}
				return
			}
			if len(evs) != before+1 {
				t.Fatalf("published %d events, want 1", len(evs)-before)
			}
			e := evs[len(evs)-1]
			if e.Type != tt.typ || e.Subject != events.MachineStreamName(machineID) || e.Source != events.RackSource(rackID) {
				t.Fatalf("published %s on %s from %s", e.Type, e.Subject, e.Source)
			}
			var data struct {
				MachineID   string `json:"machine_id"`
				OperationID string `json:"operation_id"`
			}
			if err := json.Unmarshal(e.Data, &data); err != nil || data.MachineID != machineID || data.OperationID != opID {
				t.Fatalf("data %s: %v", e.Data, err)
			}
		})
	}
	// What was taken is what the agent said.
	evs := f.published()
	var fin events.AgentFinished
	if err := json.Unmarshal(evs[len(evs)-1].Data, &fin); err != nil {
		t.Fatal(err)
	}
	if fin != (events.AgentFinished{MachineID: machineID, OperationID: opID, Purpose: events.BootPurposeCommission, Success: true, Message: "commissioned"}) {
		t.Fatalf("agent_finished %+v", fin)
	}
}

// TestRateOfAMachine: past its burst, a machine's agent is answered 429
// and nothing is published, until its rate lets it again.
func TestRateOfAMachine(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	f := start(t, agentapi.Config{Rate: 1, Burst: 3, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	url := f.base + "/agent/" + machineID + "/" + f.cred + "/step"
	step := `{"name":"x","state":"started"}`
	for i := range 3 {
		if status, body := post(t, url, step); status != 204 {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	if status, _ := post(t, url, step); status != http.StatusTooManyRequests {
		t.Fatalf("past the burst: %d, want 429", status)
	}
	if n := len(f.published()); n != 3 {
		t.Fatalf("%d events published, want 3", n)
	}
	if got := testutil.ToFloat64(f.refused.WithLabelValues(agentapi.Endpoint, "rate")); got != 1 {
		t.Fatalf("rate refusals %v, want 1", got)
	}
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	if status, _ := post(t, url, step); status != 204 {
		t.Fatalf("a second later: %d, want 204", status)
	}
}

// TestMessagesAreCut: long or dirty names and messages are cut and
// cleaned to what the events carry, not refused.
func TestMessagesAreCut(t *testing.T) {
	s, err := agentapi.ParseStep([]byte(`{"name":"` + strings.Repeat("é", 40) + `","state":"failed","message":"a\u0000b` + strings.Repeat("x", 2000) + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Name) > events.MaxAgentStepName || len(s.Message) != events.MaxAgentMessage || !strings.HasPrefix(s.Message, "a\uFFFDb") {
		t.Fatalf("name of %d bytes, message %.10q of %d", len(s.Name), s.Message, len(s.Message))
	}
}

// TestEraseBootReportsOnlyStepsAndOutcome: the agent of an erase boot
// reports its steps and outcome with its credential, and nothing a
// commissioning's agent sends: no inventory, no scripts, no script
// results, each refused as any refusal and nothing published.
func TestEraseBootReportsOnlyStepsAndOutcome(t *testing.T) {
	f := start(t, agentapi.Config{Scripts: func(context.Context, events.CommissioningScriptsRequest) (events.CommissioningScriptsReply, error) {
		t.Error("the region was asked for an erase boot's scripts")
		return events.CommissioningScriptsReply{}, nil
	}})
	base := f.base + "/agent/" + eraseID + "/" + f.keys.For(eraseID, eraseOp)
	for _, r := range []struct {
		endpoint, body string
		code           int
	}{
		{"step", `{"name":"erase:vda","state":"started","progress":0}`, 204},
		{"inventory", string(fixtureInventory(t)), 403},
		{"script", `{"name":"10-x","exit_code":0,"output":"planted","truncated":false,"duration_ms":1}`, 403},
		{"done", `{"success":true,"message":"erased"}`, 204},
	} {
		if code, body := post(t, base+"/"+r.endpoint, r.body); code != r.code {
			t.Errorf("POST %s from an erase boot: %d %s, want %d", r.endpoint, code, body, r.code)
		}
	}
	resp, err := http.Get(base + "/scripts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("GET scripts from an erase boot: %d, want 403", resp.StatusCode)
	}
	var types []string
	for _, e := range f.published() {
		types = append(types, events.Name(e.Type))
	}
	if got := strings.Join(types, ","); got != "agent_step_reported,agent_finished" {
		t.Fatalf("published %s, want the step and the outcome alone", got)
	}
}
