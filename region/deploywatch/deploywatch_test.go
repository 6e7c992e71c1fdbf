package deploywatch_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/deploywatch"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
)

// clock is a test's time, moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func TestWatchFailsOverdueDeployments(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	c := &clock{t: time.Now()}
	machines := machine.NewService(db, c.now, log)
	var ids []string
	// More than one page of overdue deployments, and one in time.
	for i := range 103 {
		m, err := machines.Create(ctx, machine.CreateRequest{Hostname: "n" + string(rune('a'+i/26)) + string(rune('a'+i%26)),
			MACs: []string{"52:54:00:00:07:" + string("0123456789abcdef"[i/16]) + string("0123456789abcdef"[i%16])}}, machine.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := machines.Deploy(ctx, m.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	c.add(time.Hour)
	intime, _ := machines.Create(ctx, machine.CreateRequest{Hostname: "intime", MACs: []string{"52:54:00:00:08:01"}}, machine.Meta{})
	if _, err := machines.Deploy(ctx, intime.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{}); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	w, err := deploywatch.New(machines, deploywatch.Config{Timeout: 30 * time.Minute, Tick: 10 * time.Millisecond, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.Check(ctx)
	if err != nil || n != 103 {
		t.Fatalf("Check failed %d deployments (%v), want 103", n, err)
	}
	for _, id := range ids[:3] {
		m, _ := machines.Get(ctx, id)
		if m.Status != events.MachineFailed || !strings.Contains(m.StatusReason, "deployment timeout of 30m0s") {
			t.Fatalf("overdue machine %+v", m)
		}
	}
	if m, _ := machines.Get(ctx, intime.ID); m.Status != events.MachineDeploying {
		t.Fatalf("the deployment in time is %s", m.Status)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64
	for _, mf := range mfs {
		if mf.GetName() == "rackplane_region_deployments_timed_out_total" {
			got = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 103 {
		t.Fatalf("timed-out counter %v, want 103", got)
	}

	// Run checks every tick until its context ends, then returns.
	c.add(time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m, _ := machines.Get(ctx, intime.ID); m.Status == events.MachineFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not fail the deployment that became overdue")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// Commissionings have a timeout of their own, and their own counter.
func TestWatchFailsOverdueCommissionings(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	c := &clock{t: time.Now()}
	machines := machine.NewService(db, c.now, log)
	var ids []string
	for i, host := range []string{"commissioning", "deploying"} {
		m, err := machines.Create(ctx, machine.CreateRequest{Hostname: host, MACs: []string{"52:54:00:00:09:0" + string(rune('1'+i))}}, machine.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			_, err = machines.Commission(ctx, m.ID, machine.Meta{})
		} else {
			_, err = machines.Deploy(ctx, m.ID, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{})
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	c.add(20 * time.Minute)
	reg := prometheus.NewRegistry()
	w, err := deploywatch.New(machines, deploywatch.Config{Timeout: time.Hour, CommissionTimeout: 10 * time.Minute, Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.Check(ctx); err != nil || n != 1 {
		t.Fatalf("Check failed %d operations (%v), want 1", n, err)
	}
	if m, _ := machines.Get(ctx, ids[0]); m.Status != events.MachineFailed || !strings.Contains(m.StatusReason, "commissioning timeout of 10m0s") {
		t.Fatalf("overdue commissioning %+v", m)
	}
	if m, _ := machines.Get(ctx, ids[1]); m.Status != events.MachineDeploying {
		t.Fatalf("the deployment in time is %s", m.Status)
	}
	counters := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		counters[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
	}
	if counters["rackplane_region_commissionings_timed_out_total"] != 1 || counters["rackplane_region_deployments_timed_out_total"] != 0 {
		t.Fatalf("counters %v", counters)
	}
}

func TestWatchOff(t *testing.T) {
	w, err := deploywatch.New(nil, deploywatch.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := w.Check(context.Background()); n != 0 || err != nil {
		t.Fatalf("a watch without timeout checked: %d %v", n, err)
	}
	if err := w.Run(context.Background()); err != nil {
		t.Fatalf("a watch without timeout ran: %v", err)
	}
}
