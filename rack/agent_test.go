package rack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/agent"
	"github.com/rackplane/rackplane/internal/natsserver"
)

// TestAgentCommissions: a commission decision's boot config carries the
// agent's URL with the operation's credential; the agent, run on a fixture
// machine with that URL on its kernel command line, reports its steps,
// inventory and outcome to the rack, which publishes them on the machine's
// stream, and the credential is in none of the agent's log.
func TestAgentCommissions(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	js := ensureStreams(t, nc)
	// The region's side the rack follows boot decisions through.
	startRegion(t, ns, &fakeRegion{})
	r, stop := infoRack(t, ns, t.TempDir())
	defer stop()

	const machineID = "0190f0e0-0000-7000-8000-0000000000ab"
	const operationID = "0190f0e0-0000-7000-8000-0000000000c1"
	publishDecision(t, js, events.BootDecision{MAC: "52:54:00:00:00:ab", MachineID: machineID, Purpose: events.BootPurposeCommission,
		Kernel: "e/linux", Initrd: "e/initrd", Params: []string{"rackplane.machine=" + machineID}, RackID: r.ID(),
		DeploymentID: operationID})
	base := "http://" + r.HTTPAddr()
	var cmdline string
	var last []byte
	defer func() {
		if cmdline == "" {
			t.Logf("last config:\n%s", last)
		}
	}()
	waitUntil(t, "the commission boot config", func() bool {
		resp, err := http.Get(base + "/ipxe/52-54-00-00-00-ab.ipxe")
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = cfg
		m := regexp.MustCompile(`(?m)^kernel \S+ (.*) initrd=`).FindSubmatch(cfg)
		if m != nil && bytes.Contains(m[1], []byte("rackplane.agent=")) {
			cmdline = string(m[1])
			return true
		}
		return false
	})
	url := agent.URLFromCmdline(cmdline)
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/agent/` + machineID + `/([A-Za-z0-9_-]{43})$`).FindStringSubmatch(url)
	if want == nil {
		t.Fatalf("kernel command line %q: want rackplane.agent=%s/agent/%s/<credential>", cmdline, base, machineID)
	}
	credential := want[1]

	// The fixture machine, booted with that command line.
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(filepath.Join("..", "internal", "inventory", "testdata", "amd64-vm"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "proc", "cmdline"), []byte(cmdline+" BOOTIF=01-52-54-00-00-00-ab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := agent.Run(ctx, agent.Config{Root: root, Attempts: 3, Timeout: 5 * time.Second, Backoff: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}); err != nil {
		t.Fatalf("agent: %v\n%s", err, logged.String())
	}
	if bytes.Contains(logged.Bytes(), []byte(credential)) {
		t.Fatalf("the agent logged its credential:\n%s", logged.String())
	}
	t.Logf("agent log:\n%s", logged.String())

	// What the rack published, on the rack stream, in order.
	stream, err := js.Stream(context.Background(), events.RackStream)
	if err != nil {
		t.Fatal(err)
	}
	var got []events.Event
	waitUntil(t, "the agent's events published", func() bool {
		got = nil
		for _, typ := range []string{events.TypeAgentStepReported, events.TypeInventoryReported, events.TypeAgentFinished} {
			cons, err := stream.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{events.RackEventSubject(r.ID(), typ)}})
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.FetchNoWait(10)
			if err != nil {
				t.Fatal(err)
			}
			for msg := range batch.Messages() {
				var ev events.Event
				if err := json.Unmarshal(msg.Data(), &ev); err != nil {
					t.Fatal(err)
				}
				got = append(got, ev)
			}
		}
		return len(got) == 4
	})
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, ev := range got {
		if err := v.Validate(ev); err != nil {
			t.Errorf("%s breaks its schema: %v", ev.Type, err)
		}
		if ev.Subject != events.MachineStreamName(machineID) || ev.Source != events.RackSource(r.ID()) {
			t.Errorf("%s on %s from %s", ev.Type, ev.Subject, ev.Source)
		}
		switch ev.Type {
		case events.TypeAgentStepReported:
			var s events.AgentStepReported
			_ = json.Unmarshal(ev.Data, &s)
			if s.OperationID != operationID || s.Purpose != events.BootPurposeCommission {
				t.Errorf("step %+v", s)
			}
			steps = append(steps, s.Name+" "+s.State)
		case events.TypeInventoryReported:
			var inv events.InventoryReported
			_ = json.Unmarshal(ev.Data, &inv)
			if inv.OperationID != operationID || inv.Inventory.Architecture != "amd64" || len(inv.Inventory.NICs) == 0 {
				t.Errorf("inventory %+v", inv)
			}
		case events.TypeAgentFinished:
			var fin events.AgentFinished
			_ = json.Unmarshal(ev.Data, &fin)
			if fin != (events.AgentFinished{MachineID: machineID, OperationID: operationID, Purpose: events.BootPurposeCommission, Success: true}) {
				t.Errorf("finished %+v", fin)
			}
		}
	}
	if len(steps) != 2 || steps[0] != "inventory started" || steps[1] != "inventory done" {
		t.Errorf("steps %q, want inventory started, inventory done", steps)
	}

	// Another operation's credential opens nothing, and is counted as the
	// preseed's refusals are.
	wrong := "A" + credential[1:]
	if credential[0] == 'A' {
		wrong = "B" + credential[1:]
	}
	resp, err := http.Post(base+"/agent/"+machineID+"/"+wrong+"/done", "application/json", bytes.NewReader([]byte(`{"success":false}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a wrong credential: %s, want 403", resp.Status)
	}
	if n := scrape(t, base, `rackplane_machine_requests_refused_total{endpoint="agent",reason="wrong_credential"}`); n != 1 {
		t.Fatalf("wrong credentials counted %v, want 1", n)
	}
}
