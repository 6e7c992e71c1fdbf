package events_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

const powerSecret = "pw-Zq81-never-printed"

func TestPowerActions(t *testing.T) {
	for _, a := range events.PowerActions {
		if got, ok := events.ParsePowerAction(string(a)); !ok || got != a {
			t.Errorf("ParsePowerAction(%q) = %q, %t", a, got, ok)
		}
	}
	for _, name := range []string{"", "ON", "reset", "on ", "power.on", "../on"} {
		if a, ok := events.ParsePowerAction(name); ok {
			t.Errorf("ParsePowerAction(%q) = %q, want none", name, a)
		}
	}
	if got := events.PowerRPCSchema(events.PartRequest); got != "power_rpc.request.v1" {
		t.Errorf("request schema %q", got)
	}
}

// TestPowerParametersHidePassword: fmt, in every verb a log line might
// use, and log/slog never print the password, while JSON (the wire)
// carries it.
func TestPowerParametersHidePassword(t *testing.T) {
	p := events.PowerParameters{Address: "10.0.0.9", Port: 623, Username: "admin", Password: powerSecret,
		Extra: map[string]string{"cipher_suite": "3"}}
	req := events.PowerRequest{MachineID: "m1", Driver: "ipmi", Action: events.PowerOn, Parameters: p}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("power", "parameters", p, "request", req)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("power", "parameters", p)
	for _, s := range []string{
		fmt.Sprint(p), fmt.Sprintf("%v %+v %#v %s", p, p, p, p),
		fmt.Sprintf("%v %+v %#v", req, req, req), fmt.Sprint(&req), logged.String(),
	} {
		if strings.Contains(s, powerSecret) {
			t.Errorf("password printed: %s", s)
		}
		if !strings.Contains(s, "10.0.0.9") {
			t.Errorf("address not printed: %s", s)
		}
	}
	b, err := json.Marshal(req)
	if err != nil || !strings.Contains(string(b), powerSecret) {
		t.Errorf("the wire form lacks the password: %s %v", b, err)
	}
}

func TestPowerRequestSchema(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	name := events.PowerRPCSchema(events.PartRequest)
	good := func() map[string]any {
		return map[string]any{"machine_id": "0190a3c2-2222-7000-8000-000000000001", "driver": "ipmi", "action": "on",
			"parameters": map[string]any{"address": "10.0.0.9", "port": 623, "username": "admin", "password": powerSecret,
				"extra": map[string]any{"cipher_suite": "3"}}}
	}
	cases := []struct {
		name   string
		change func(m map[string]any)
		ok     bool
	}{
		{"good", func(map[string]any) {}, true},
		{"empty parameters", func(m map[string]any) { m["parameters"] = map[string]any{} }, true},
		{"set_boot with device", func(m map[string]any) { m["action"] = "set_boot"; m["boot_device"] = "pxe" }, true},
		{"set_boot without device", func(m map[string]any) { m["action"] = "set_boot" }, false},
		{"device on another action", func(m map[string]any) { m["boot_device"] = "disk" }, false},
		{"unknown device", func(m map[string]any) { m["action"] = "set_boot"; m["boot_device"] = "cdrom" }, false},
		{"unknown action", func(m map[string]any) { m["action"] = "reset" }, false},
		{"driver path", func(m map[string]any) { m["driver"] = "../ipmi" }, false},
		{"driver upper case", func(m map[string]any) { m["driver"] = "IPMI" }, false},
		{"no machine", func(m map[string]any) { delete(m, "machine_id") }, false},
		{"machine with slash", func(m map[string]any) { m["machine_id"] = "a/b" }, false},
		{"no parameters", func(m map[string]any) { delete(m, "parameters") }, false},
		{"unknown field", func(m map[string]any) { m["script"] = "x" }, false},
		{"unknown parameter", func(m map[string]any) { m["parameters"].(map[string]any)["command"] = "x" }, false},
		{"newline in password", func(m map[string]any) { m["parameters"].(map[string]any)["password"] = "a\nb" }, false},
		{"NUL in address", func(m map[string]any) { m["parameters"].(map[string]any)["address"] = "a\x00b" }, false},
		{"port out of range", func(m map[string]any) { m["parameters"].(map[string]any)["port"] = 70000 }, false},
		{"extra upper case", func(m map[string]any) { m["parameters"].(map[string]any)["extra"] = map[string]any{"PATH": "/tmp"} }, false},
		{"extra not a string", func(m map[string]any) { m["parameters"].(map[string]any)["extra"] = map[string]any{"n": 3} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.change(m)
			b, _ := json.Marshal(m)
			err := set.ValidateJSON(name, b)
			if (err == nil) != tc.ok {
				t.Errorf("valid %t, want %t: %v", err == nil, tc.ok, err)
			}
		})
	}
	// What Go sends validates.
	b, _ := json.Marshal(events.PowerRequest{MachineID: "m1", Driver: "qemu", Action: events.PowerStatus,
		Parameters: events.PowerParameters{Address: "/run/vm.qmp"}})
	if err := set.ValidateJSON(name, b); err != nil {
		t.Errorf("%s: %v", b, err)
	}
}

func TestPowerReplyAndEventSchemas(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	for _, outcome := range events.PowerOutcomes {
		reply := events.PowerReply{MachineID: "m1", Action: events.PowerCycle, State: events.PowerStateUnknown,
			OK: outcome == events.PowerOutcomeOK, Outcome: outcome, Error: "why", DurationMS: 12}
		b, _ := json.Marshal(reply)
		if err := set.ValidateJSON(events.PowerRPCSchema(events.PartReply), b); err != nil {
			t.Errorf("reply %s: %v", b, err)
		}
		rack := uuid.NewString()
		ev, err := events.New(events.RackSource(rack), events.TypePowerActionCompleted, events.MachineStreamName("m1"), time.Now(),
			events.PowerActionCompleted{MachineID: "m1", Driver: "ipmi", Action: events.PowerSetBoot, BootDevice: events.BootDevicePXE,
				State: events.PowerStateUnknown, OK: reply.OK, Outcome: outcome, StartedAt: time.Now().UTC(), DurationMS: 12})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(ev); err != nil {
			t.Errorf("event: %v", err)
		}
	}
	// The event schema has no room for a credential, whatever its name.
	ev, _ := events.New(events.RackSource(uuid.NewString()), events.TypePowerActionCompleted, events.MachineStreamName("m1"), time.Now(),
		map[string]any{"machine_id": "m1", "driver": "ipmi", "action": "on", "state": "on", "ok": true, "outcome": "ok",
			"started_at": time.Now().UTC(), "duration_ms": 1, "password": powerSecret})
	if err := v.Validate(ev); err == nil {
		t.Error("an event with a password validates")
	}
}
