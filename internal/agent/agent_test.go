package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/agent"
	"github.com/rackplane/rackplane/rack/agentapi"
	"github.com/rackplane/rackplane/rack/machinecred"
)

const (
	machineID = "0190f0e0-0000-7000-8000-0000000000aa"
	opID      = "0190f0e0-0000-7000-8000-0000000000c1"
)

var fixture = filepath.Join("..", "inventory", "testdata", "amd64-vm")

// rack serves the agent's endpoints as a rack does, behind trouble: the
// first tries of each endpoint get no answer in time or a 503.
type rack struct {
	url  string
	cred string

	mu    sync.Mutex
	tries map[string]int
	evs   []events.Event
}

func startRack(t *testing.T, trouble func(w http.ResponseWriter, try int) bool) *rack {
	t.Helper()
	keys, err := machinecred.New(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	r := &rack{cred: keys.For(machineID, opID), tries: map[string]int{}}
	h, err := agentapi.New(agentapi.Config{RackID: "0190f0e0-0000-7000-8000-0000000000ee",
		Boot: func(id string) (events.BootDecision, bool) {
			return events.BootDecision{MachineID: id, Purpose: events.BootPurposeCommission, DeploymentID: opID}, id == machineID
		},
		Check:   keys.Check,
		Publish: func(e events.Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() },
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "refused"}, []string{"endpoint", "reason"}),
		Logger:  slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		endpoint := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
		r.mu.Lock()
		r.tries[endpoint]++
		try := r.tries[endpoint]
		r.mu.Unlock()
		if trouble != nil && trouble(w, try) {
			return
		}
		mux.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/agent/" + machineID + "/" + r.cred
	return r
}

func (r *rack) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, events.Name(e.Type))
	}
	return out
}

// TestRetriesThroughTrouble: a try that gets no answer within the
// timeout, or a 503, is made again; every report arrives once, in order.
func TestRetriesThroughTrouble(t *testing.T) {
	r := startRack(t, func(w http.ResponseWriter, try int) bool {
		switch try {
		case 1:
			time.Sleep(400 * time.Millisecond) // past the agent's timeout
			return true
		case 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	var logged bytes.Buffer
	err := agent.Run(context.Background(), agent.Config{URL: r.url, Root: fixture, Attempts: 4, Timeout: 200 * time.Millisecond,
		Backoff: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.types(), ","); got != "agent_step_reported,inventory_reported,agent_step_reported,agent_finished" {
		t.Fatalf("published %s", got)
	}
	if !strings.Contains(logged.String(), "trying again") || strings.Contains(logged.String(), r.cred) {
		t.Fatalf("log (should say it tried again, and hold no credential):\n%s", logged.String())
	}
}

// TestGivesUp: a rack that never answers well is tried Attempts times,
// and a refusal once: the agent ends, saying why without its credential.
func TestGivesUp(t *testing.T) {
	r := startRack(t, func(w http.ResponseWriter, _ int) bool {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return true
	})
	err := agent.Run(context.Background(), agent.Config{URL: r.url, Root: fixture, Attempts: 3, Timeout: time.Second, Backoff: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "503") || strings.Contains(err.Error(), r.cred) {
		t.Fatalf("err %v, want a 503 without the credential", err)
	}
	r.mu.Lock()
	tries := r.tries["inventory"]
	r.mu.Unlock()
	if tries != 3 {
		t.Fatalf("inventory tried %d times, want 3", tries)
	}

	wrong := startRack(t, nil)
	err = agent.Run(context.Background(), agent.Config{URL: wrong.url + "x", Root: fixture, Attempts: 5, Backoff: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), wrong.cred) {
		t.Fatalf("err %v, want a 403 without the credential", err)
	}
	wrong.mu.Lock()
	defer wrong.mu.Unlock()
	if wrong.tries["inventory"] != 1 || len(wrong.evs) != 0 {
		t.Fatalf("a refused inventory tried %d times, %d events", wrong.tries["inventory"], len(wrong.evs))
	}
}

func TestURLFromCmdline(t *testing.T) {
	for cmdline, want := range map[string]string{
		"console=ttyS0 rackplane.agent=http://r:5248/agent/m/c quiet\n": "http://r:5248/agent/m/c",
		"rackplane.agentx=1":                  "",
		"":                                    "",
		"rackplane.agent=a rackplane.agent=b": "b",
	} {
		if got := agent.URLFromCmdline(cmdline); got != want {
			t.Errorf("%q: %q, want %q", cmdline, got, want)
		}
	}
	if err := agent.Run(context.Background(), agent.Config{Root: fixture}); err == nil || !strings.Contains(err.Error(), "no rackplane.agent=") {
		t.Fatalf("without a URL: %v", err)
	}
}
