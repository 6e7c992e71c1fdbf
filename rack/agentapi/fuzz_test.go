package agentapi_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/agentapi"
)

// validText is what the region keeps of an agent's words.
func validText(t *testing.T, what, s string, limit int) {
	t.Helper()
	if len(s) > limit || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' || r == 0x7f }) {
		t.Fatalf("%s %q of %d bytes taken", what, s, len(s))
	}
}

// validEvent: what a parser took makes an event the region accepts.
func validEvent(t *testing.T, typ string, data any) {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.New(events.RackSource(rackID), typ, events.MachineStreamName(machineID), time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(e); err != nil {
		t.Fatalf("taken, but the event is refused: %v", err)
	}
}

// FuzzParseStep: a step is refused or makes a valid agent_step_reported.
func FuzzParseStep(f *testing.F) {
	f.Add(`{"name":"inventory","state":"started","progress":0}`)
	f.Add(`{"name":"erase","state":"failed","message":"sda: I/O error\n","progress":42}`)
	f.Add(`{"name":" ","state":"done"}`)
	f.Add(`{"name":"\u0000","state":"done","progress":-1}`)
	f.Add(`{"name":"x","state":"done"} trailing`)
	f.Fuzz(func(t *testing.T, body string) {
		s, err := agentapi.ParseStep([]byte(body))
		if err != nil {
			return
		}
		validText(t, "name", s.Name, events.MaxAgentStepName)
		validText(t, "message", s.Message, events.MaxAgentMessage)
		validEvent(t, events.TypeAgentStepReported, events.AgentStepReported{MachineID: machineID, OperationID: opID,
			Purpose: events.BootPurposeCommission, Name: s.Name, State: s.State, Message: s.Message, Progress: s.Progress})
	})
}

// FuzzParseDone: a final report is refused or makes a valid
// agent_finished.
func FuzzParseDone(f *testing.F) {
	f.Add(`{"success":true}`)
	f.Add(`{"success":false,"message":"no disk"}`)
	f.Add(`{"success":null}`)
	f.Add(`{"message":"\udc00"}`)
	f.Fuzz(func(t *testing.T, body string) {
		d, err := agentapi.ParseDone([]byte(body))
		if err != nil {
			return
		}
		validText(t, "message", d.Message, events.MaxAgentMessage)
		validEvent(t, events.TypeAgentFinished, events.AgentFinished{MachineID: machineID, OperationID: opID,
			Purpose: events.BootPurposeCommission, Success: d.Success, Message: d.Message})
	})
}

// FuzzInventoryBody: an inventory body is refused whole or makes a valid
// inventory_reported (within an event's size).
func FuzzInventoryBody(f *testing.F) {
	f.Add(fixtureInventory(f))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"collected_at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		inv, err := events.DecodeInventory(body)
		if err != nil {
			return
		}
		if _, err := json.Marshal(inv); err != nil {
			t.Fatal(err)
		}
		validEvent(t, events.TypeInventoryReported, events.InventoryReported{MachineID: machineID, OperationID: opID, Inventory: inv})
	})
}

// FuzzParseScriptResult: a script's result is refused or makes a valid
// agent_script_reported, its output within its bound.
func FuzzParseScriptResult(f *testing.F) {
	f.Add(`{"name":"10-hello","exit_code":0,"output":"hello\n","duration_ms":12}`)
	f.Add(`{"name":"20-fail","exit_code":-1,"output":"\u0000\udc00","truncated":true,"duration_ms":0}`)
	f.Add(`{"name":"x","exit_code":256}`)
	f.Add(`{"name":"A","exit_code":0}`)
	f.Fuzz(func(t *testing.T, body string) {
		r, err := agentapi.ParseScriptResult([]byte(body))
		if err != nil {
			return
		}
		validText(t, "output", r.Output, events.MaxScriptOutput)
		validEvent(t, events.TypeAgentScriptReported, events.AgentScriptReported{MachineID: machineID, OperationID: opID,
			Name: r.Name, ExitCode: r.ExitCode, Output: r.Output, Truncated: r.Truncated, DurationMS: r.DurationMS})
	})
}

// FuzzTail: a tail is at most its bound, valid UTF-8 from valid UTF-8,
// and the end of what it was cut from.
func FuzzTail(f *testing.F) {
	f.Add("hello", 3)
	f.Add("ééé", 4)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit < 0 || limit > 1<<20 {
			return
		}
		tail, cut := agentapi.Tail(s, limit)
		if len(tail) > limit || cut != (len(tail) < len(s)) {
			t.Fatalf("Tail(%q, %d) = %q, %v", s, limit, tail, cut)
		}
		if utf8.ValidString(s) && (!utf8.ValidString(tail) || !strings.HasSuffix(s, tail)) {
			t.Fatalf("Tail(%q, %d) = %q: not the end of it, or not UTF-8", s, limit, tail)
		}
	})
}
