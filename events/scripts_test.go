package events_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane/events"
)

// TestScriptEventsChecked: what the validator refuses of script events
// beyond their schemas.
func TestScriptEventsChecked(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	const machine, rack = "0190f0e0-0000-7000-8000-0000000000aa", "0190f0e0-0000-7000-8000-0000000000ee"
	report := func(mod func(*events.AgentScriptReported)) events.AgentScriptReported {
		d := events.AgentScriptReported{MachineID: machine, OperationID: "0190f0e0-0000-7000-8000-0000000000c1", Name: "10-hello",
			ExitCode: 0, Output: "hello\n", DurationMS: 12}
		if mod != nil {
			mod(&d)
		}
		return d
	}
	set := func(mod func(*events.CommissioningScriptSet)) events.CommissioningScriptSet {
		d := events.CommissioningScriptSet{Name: "10-hello", Content: "echo hi\n", TimeoutSeconds: 300, SHA256: events.ScriptSHA256("echo hi\n")}
		if mod != nil {
			mod(&d)
		}
		return d
	}
	tests := []struct {
		name, source, typ, subject string
		data                       any
		ok                         bool
	}{
		{"report", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine), report(nil), true},
		{"timed out", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine),
			report(func(d *events.AgentScriptReported) { d.ExitCode = -1 }), true},
		{"full output", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine),
			report(func(d *events.AgentScriptReported) { d.Output = strings.Repeat("x", events.MaxScriptOutput) }), true},
		{"output over in bytes", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine),
			report(func(d *events.AgentScriptReported) { d.Output = strings.Repeat("é", events.MaxScriptOutput/2+1) }), false},
		{"bad name", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine),
			report(func(d *events.AgentScriptReported) { d.Name = "../x" }), false},
		{"exit code", events.RackSource(rack), events.TypeAgentScriptReported, events.MachineStreamName(machine),
			report(func(d *events.AgentScriptReported) { d.ExitCode = 256 }), false},
		{"another machine's stream", events.RackSource(rack), events.TypeAgentScriptReported,
			events.MachineStreamName("0190f0e0-0000-7000-8000-0000000000ab"), report(nil), false},
		{"from the region", events.RegionSource, events.TypeAgentScriptReported, events.MachineStreamName(machine), report(nil), false},
		{"set", events.RegionSource, events.TypeCommissioningScriptSet, events.CommissioningScriptStreamName("10-hello"), set(nil), true},
		{"set, wrong digest", events.RegionSource, events.TypeCommissioningScriptSet, events.CommissioningScriptStreamName("10-hello"),
			set(func(d *events.CommissioningScriptSet) { d.SHA256 = strings.Repeat("0", 64) }), false},
		{"set, content over in bytes", events.RegionSource, events.TypeCommissioningScriptSet, events.CommissioningScriptStreamName("10-hello"),
			set(func(d *events.CommissioningScriptSet) {
				d.Content = strings.Repeat("é", events.MaxScriptContent/2+1)
				d.SHA256 = events.ScriptSHA256(d.Content)
			}), false},
		{"set, timeout", events.RegionSource, events.TypeCommissioningScriptSet, events.CommissioningScriptStreamName("10-hello"),
			set(func(d *events.CommissioningScriptSet) { d.TimeoutSeconds = events.MaxScriptTimeout + 1 }), false},
		{"set, another stream", events.RegionSource, events.TypeCommissioningScriptSet, events.CommissioningScriptStreamName("20-x"), set(nil), false},
		{"deleted", events.RegionSource, events.TypeCommissioningScriptDeleted, events.CommissioningScriptStreamName("10-hello"),
			events.CommissioningScriptDeleted{Name: "10-hello"}, true},
		{"deleted, another stream", events.RegionSource, events.TypeCommissioningScriptDeleted, events.CommissioningScriptStreamName("10-hellO"),
			events.CommissioningScriptDeleted{Name: "10-hello"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := events.New(tt.source, tt.typ, tt.subject, time.Now(), tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Validate(e); (err == nil) != tt.ok {
				t.Fatalf("valid %v, want %v: %v", err == nil, tt.ok, err)
			}
		})
	}
	for _, n := range []struct {
		name string
		ok   bool
	}{{"10-hello", true}, {"a", true}, {"9.x_y-z", true}, {"", false}, {"-x", false}, {"A", false}, {"a/b", false},
		{strings.Repeat("a", 64), true}, {strings.Repeat("a", 65), false}} {
		if events.ValidScriptName(n.name) != n.ok {
			t.Errorf("ValidScriptName(%q) = %v", n.name, !n.ok)
		}
	}
}
