package region_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

// TestCommissioningScriptsAPI: scripts are made, read, replaced and
// deleted through the API; a bad field is a 400 naming it, a second
// script of a name a 409, a script that is not there a 404, and nothing
// refused is kept.
func TestCommissioningScriptsAPI(t *testing.T) {
	h := startRegion(t)
	base := h.api + "/api/v1/commissioning-scripts"
	steps := []struct {
		name, method, path, body string
		code                     int
		want                     string // in the answer
	}{
		{"create", "POST", "", `{"name":"10-disks","content":"#!/bin/sh\nlsblk\n","timeout_seconds":60}`, 201, `"name": "10-disks"`},
		{"the same name again", "POST", "", `{"name":"10-disks","content":"echo"}`, 409, "10-disks"},
		{"a bad name", "POST", "", `{"name":"Bad Name","content":"echo"}`, 400, "name"},
		{"no content", "POST", "", `{"name":"20-empty","content":""}`, 400, "content"},
		{"a timeout past 1h", "POST", "", `{"name":"30-long","content":"echo","timeout_seconds":3601}`, 400, "timeout_seconds"},
		{"too big", "POST", "", `{"name":"40-big","content":"` + strings.Repeat("x", 64<<10+1) + `"}`, 400, "content"},
		{"an unknown field", "POST", "", `{"name":"50-x","content":"echo","shell":"bash"}`, 400, "shell"},
		{"read", "GET", "/10-disks", "", 200, "lsblk"},
		{"replace", "PUT", "/10-disks", `{"content":"echo replaced","timeout_seconds":120}`, 200, `"timeout_seconds": 120`},
		{"rename on replace", "PUT", "/10-disks", `{"name":"11-other","content":"echo"}`, 400, "renamed"},
		{"replace what is not there", "PUT", "/99-none", `{"content":"echo"}`, 404, ""},
		{"list", "GET", "", "", 200, `"size": 13`},
		{"delete", "DELETE", "/10-disks", "", 204, ""},
		{"deleted", "GET", "/10-disks", "", 404, ""},
		{"delete again", "DELETE", "/10-disks", "", 404, ""},
	}
	for _, s := range steps {
		code, body, _ := h.raw(s.method, base+s.path, map[string]string{"Content-Type": "application/json"}, s.body)
		if code != s.code || !strings.Contains(body, s.want) {
			t.Fatalf("%s: %d %.300s, want %d with %q", s.name, code, body, s.code, s.want)
		}
	}
	// Nothing refused was kept.
	_, list, _ := h.raw("GET", base, nil, "")
	if strings.Contains(list, `"name"`) {
		t.Fatalf("scripts left: %s", list)
	}
}

// TestScriptResultsOnlyFromTheCommissioning: a script's result is kept
// when the rack that serves the machine's boot passes it on for the
// machine's commissioning in progress, and not from another rack, for
// another operation, or once the commissioning has ended.
func TestScriptResultsOnlyFromTheCommissioning(t *testing.T) {
	h := startRegion(t)
	r := ephemeralRack(t, h)
	m := h.newMachine("scripted", "52:54:00:dd:20:01")
	if code := h.do("PATCH", "/api/v1/machines/"+m.ID, map[string]any{"boot_rack_id": r.ID()}, nil); code != 200 {
		t.Fatalf("set boot rack: %d", code)
	}
	op := h.commission(m)
	report := func(rackID, op, name string) {
		t.Helper()
		ev, err := events.New(events.RackSource(rackID), events.TypeAgentScriptReported, events.MachineStreamName(m.ID), time.Now(),
			events.AgentScriptReported{MachineID: m.ID, OperationID: op, Name: name, ExitCode: 0, Output: name + " ran\n", DurationMS: 5})
		if err != nil {
			t.Fatal(err)
		}
		h.publishRaw(rackID, ev)
		h.logged(ev.ID)
	}
	report(r.ID(), op, "10-kept")
	report(uuid.NewString(), op, "20-other-rack")
	report(r.ID(), uuid.NewString(), "30-other-operation")
	h.agentFinished(r.ID(), m, op, true, "", 1)
	h.waitStatus(m.ID, "ready", 10*time.Second)
	report(r.ID(), op, "40-too-late")

	var got struct {
		OperationID string `json:"operation_id"`
		Results     []struct{ Name string }
	}
	if code := h.getJSON("/api/v1/machines/"+m.ID+"/commissioning", &got); code != 200 {
		t.Fatalf("commissioning results: %d", code)
	}
	var names []string
	for _, res := range got.Results {
		names = append(names, res.Name)
	}
	if got.OperationID != op || strings.Join(names, ",") != "10-kept" {
		t.Fatalf("results of operation %s: %v, want 10-kept alone for %s", got.OperationID, names, op)
	}
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM commissioning_script_results`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d result rows (%v), want 1", n, err)
	}
}
