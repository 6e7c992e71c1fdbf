package rack_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack"
	"github.com/rackplane/rackplane/schema"
)

// writeShellBMC makes a script driver in search/name whose BMC is the
// file named by the address.
func writeShellBMC(t *testing.T, search, name string) {
	t.Helper()
	dir := filepath.Join(search, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for script, body := range map[string]string{
		"power-on":     `echo on > "$POWER_ADDRESS"`,
		"power-off":    `echo off > "$POWER_ADDRESS"`,
		"power-status": `cat "$POWER_ADDRESS"`,
	} {
		if err := os.WriteFile(filepath.Join(dir, script), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRackPower: a rack reports its power drivers in its capability
// snapshot, again when a script driver is added, answers power over rpc
// and publishes the action's event on its event subject.
func TestRackPower(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	ensureStreams(t, nc)
	search := t.TempDir()
	writeShellBMC(t, search, "shellbmc")
	cfg := rack.DefaultConfig()
	cfg.DataDir, cfg.Name, cfg.TFTPAddrs, cfg.ImportSystemBootloaders = t.TempDir(), "power-rack", nil, false
	cfg.Power.SearchPath, cfg.Power.Timeout = []string{search}, 5*time.Second
	cfg.PowerPollInterval = 50 * time.Millisecond
	r, stop := runRack(t, ns, cfg)
	defer stop()
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	drivers := func() []string {
		var raw json.RawMessage
		var err error
		for range 100 { // until the rack answers, once it runs
			if err = rpc.Call(ctx, nc, events.RackRPCSubject(r.ID(), events.MethodCapabilities), struct{}{}, &raw); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := set.ValidateJSON("capabilities.v1", raw); err != nil {
			t.Fatalf("capabilities break their schema: %v", err)
		}
		var caps events.Capabilities
		if err := json.Unmarshal(raw, &caps); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, d := range caps.PowerDrivers {
			if d.Name == "shellbmc" && (!d.Available || d.Kind != events.PowerDriverScript) {
				t.Errorf("shellbmc: %+v", d)
			}
			names = append(names, d.Name)
		}
		return names
	}
	if got := drivers(); !slices.Equal(got, []string{"ipmi", "qemu", "webhook", "shellbmc"}) {
		t.Errorf("power drivers %v", got)
	}

	evs := make(chan []byte, 16)
	sub, err := nc.Subscribe(events.RackEventSubject(r.ID(), events.TypePowerActionCompleted), func(m *nats.Msg) { evs <- m.Data })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	bmc := filepath.Join(t.TempDir(), "bmc")
	if err := os.WriteFile(bmc, []byte("off\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var reply events.PowerReply
	req := events.PowerRequest{MachineID: "m-1", Driver: "shellbmc", Action: events.PowerOn,
		Parameters: events.PowerParameters{Address: bmc, Password: "rack-secret"}}
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(r.ID(), events.MethodPower), req, &reply); err != nil {
		t.Fatal(err)
	}
	if !reply.OK || reply.State != events.PowerStateOn {
		t.Fatalf("reply %+v", reply)
	}
	select {
	case raw := <-evs:
		v, err := events.NewValidator()
		if err != nil {
			t.Fatal(err)
		}
		e, err := v.Decode(raw)
		if err != nil {
			t.Fatalf("event: %v", err)
		}
		var d events.PowerActionCompleted
		if err := e.DecodeData(&d); err != nil || d.MachineID != "m-1" || !d.OK || e.Subject != "machine/m-1" {
			t.Errorf("event %s: %+v %v", raw, d, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no power_action_completed event")
	}

	// A driver dropped into the search path is reported.
	writeShellBMC(t, search, "newbmc")
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(drivers(), "newbmc") {
		if time.Now().After(deadline) {
			t.Fatal("the new driver is not reported")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
