package rackrpc_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/rackrpc"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/region/scripts"
)

// TestCommissioningScripts: a rack gets the scripts for the agent of a
// machine it serves, in its commissioning in progress only, and the
// results the rack passes on are what the region shows, replays and
// retries included.
func TestCommissioningScripts(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	machines := machine.NewService(db, nil, log)
	svc := scripts.NewService(db, nil)
	ns := natsserver.StartTest(t)
	srv := rpc.NewServer(ns.Connect(), "region", log, 4, 5*time.Second)
	t.Cleanup(srv.Close)
	if err := rackrpc.New(db, machines, regiontest.Keys(t), nil, log).Register(srv); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	const otherRack = "0190f0e0-0000-7000-8000-0000000000ab"

	for _, sc := range []scripts.Script{{Name: "20-fail", Content: "exit 1\n", TimeoutSeconds: 10}, {Name: "10-hello", Content: "echo hello\n"}} {
		if err := svc.Create(ctx, sc, scripts.Meta{Actor: "tester"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Create(ctx, scripts.Script{Name: "10-hello", Content: "echo again\n"}, scripts.Meta{}); rackplane.ErrorCode(err) != rackplane.ECONFLICT {
		t.Fatalf("a second 10-hello: %v, want conflict", err)
	}
	for _, bad := range []scripts.Script{{Name: "Bad", Content: "x"}, {Name: "x", Content: ""}, {Name: "x", Content: "x", TimeoutSeconds: 3601}} {
		if err := svc.Create(ctx, bad, scripts.Meta{}); rackplane.ErrorCode(err) != rackplane.EINVALID {
			t.Fatalf("%+v taken: %v", bad, err)
		}
	}
	if err := svc.Replace(ctx, scripts.Script{Name: "30-none", Content: "x"}, scripts.Meta{}); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("replace of no script: %v", err)
	}
	// A deleted script can be made again.
	if err := svc.Create(ctx, scripts.Script{Name: "30-gone", Content: "true"}, scripts.Meta{}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, "30-gone", scripts.Meta{}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, "30-gone", scripts.Meta{}); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("second delete: %v", err)
	}
	if err := svc.Create(ctx, scripts.Script{Name: "30-gone", Content: "true"}, scripts.Meta{}); err != nil {
		t.Fatalf("re-create: %v", err)
	}
	if err := svc.Delete(ctx, "30-gone", scripts.Meta{}); err != nil {
		t.Fatal(err)
	}

	m, err := machines.Create(ctx, machine.CreateRequest{Hostname: "com1", MACs: []string{"52:54:00:00:06:01"},
		BootRackID: machinetest.RackID}, machine.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	ask := func(rack, op string) (events.CommissioningScriptsReply, error) {
		var out events.CommissioningScriptsReply
		err := rpc.Call(ctx, nc, events.RegionRPCSubject(rack, events.MethodCommissioningScripts),
			events.CommissioningScriptsRequest{MachineID: m.ID, OperationID: op}, &out)
		return out, err
	}
	const otherOp = "0190f0e0-0000-7000-8000-0000000000dd"
	if _, err := ask(machinetest.RackID, otherOp); rackplane.ErrorCode(err) != rackplane.EFORBIDDEN {
		t.Fatalf("before commissioning: %v, want forbidden", err)
	}
	res, err := machines.Commission(ctx, m.ID, machine.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	op := *res.After.DeploymentID
	tests := []struct {
		name, rack, op string
		code           string
	}{
		{"the machine's rack, its commissioning", machinetest.RackID, op, ""},
		{"another rack", otherRack, op, rackplane.EFORBIDDEN},
		{"another operation", machinetest.RackID, otherOp, rackplane.EFORBIDDEN},
		{"not an operation", machinetest.RackID, "x", rackplane.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := ask(tt.rack, tt.op)
			if rackplane.ErrorCode(err) != tt.code {
				t.Fatalf("%v, want %q", err, tt.code)
			}
			if tt.code != "" {
				return
			}
			if len(out.Scripts) != 2 || out.Scripts[0].Name != "10-hello" || out.Scripts[1].Name != "20-fail" ||
				out.Scripts[0].TimeoutSeconds != events.DefaultScriptTimeout || out.Scripts[1].TimeoutSeconds != 10 ||
				out.Scripts[1].Content != "exit 1\n" || out.Scripts[1].SHA256 != events.ScriptSHA256("exit 1\n") {
				t.Fatalf("scripts %+v", out.Scripts)
			}
		})
	}

	// The results, as the rack passes them on.
	report := func(name string, code int, output string) events.Event {
		e, err := events.New(events.RackSource(machinetest.RackID), events.TypeAgentScriptReported, events.MachineStreamName(m.ID), time.Now(),
			events.AgentScriptReported{MachineID: m.ID, OperationID: op, Name: name, ExitCode: code, Output: output, DurationMS: 5})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	appendAll := func(evs ...events.Event) {
		t.Helper()
		if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, evs); return err }); err != nil {
			t.Fatal(err)
		}
	}
	got, err := svc.Results(ctx, m.ID)
	if err != nil || len(got.Results) != 0 {
		t.Fatalf("results before any: %+v %v", got, err)
	}
	hello, first, retry := report("10-hello", 0, "hello\n"), report("20-fail", 1, "first try\n"), report("20-fail", 1, "disk check failed\n")
	appendAll(hello, first)
	appendAll(retry, hello) // an agent's retry, and a replay of an event taken
	got, err = svc.Results(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.OperationID != op || len(got.Results) != 2 || got.Results[0].Name != "10-hello" || got.Results[0].ExitCode != 0 ||
		got.Results[0].Output != "hello\n" || got.Results[1].Name != "20-fail" || got.Results[1].ExitCode != 1 ||
		got.Results[1].Output != "disk check failed\n" || got.Results[1].RackID != machinetest.RackID {
		t.Fatalf("results %+v", got)
	}
	// A rebuild from the log makes the same.
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := svc.Results(ctx, m.ID)
	if err != nil || len(again.Results) != 2 || again.Results[1].Output != "disk check failed\n" {
		t.Fatalf("after a rebuild: %+v %v", again, err)
	}
	list, err := svc.List(ctx)
	if err != nil || len(list) != 2 || list[0].Content != "" || list[0].Size != len("echo hello\n") {
		t.Fatalf("scripts after a rebuild: %+v %v", list, err)
	}
	if _, err := svc.Results(ctx, "0190f0e0-0000-7000-8000-0000000000ff"); rackplane.ErrorCode(err) != rackplane.ENOTFOUND {
		t.Fatalf("results of no machine: %v", err)
	}
}
