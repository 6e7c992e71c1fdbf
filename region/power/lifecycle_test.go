package power_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/power"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestPowerTasksFollowOperations drives the lifecycle's bookkeeping as
// its attempts do, against PostgreSQL: a task per operation, leased to
// one attempt; an operator's release during a deploy attempt takes the
// task from that attempt (which then sends nothing more) but the release
// waits until the attempt has ended; a power on sent whose outcome was
// lost is remembered, so the next attempt does not cycle the machine; and
// parameters set after a deployment started give it no power work.
func TestPowerTasksFollowOperations(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := machinetest.Database(t)
	ms := machine.NewService(db, nil, log)
	ps := power.New(db, nil, regiontest.Keys(t), nil, log)
	newMachine := func(host, mac string, withPower bool) string {
		t.Helper()
		m, err := ms.Create(ctx, machine.CreateRequest{Hostname: host, MACs: []string{mac}, Arch: "amd64", BootRackID: machinetest.RackID}, machine.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if withPower {
			if _, _, err := ps.Set(ctx, m.ID, power.SetRequest{Driver: "shellbmc", Address: "/bmc/" + host}, power.Meta{}); err != nil {
				t.Fatal(err)
			}
		}
		return m.ID
	}
	deploy := func(id string) string {
		t.Helper()
		res, err := ms.Deploy(ctx, id, machine.DeployRequest{OS: "ubuntu", Release: "noble"}, machine.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		return *res.After.DeploymentID
	}
	lease := func(want int) []postgres.PowerTask {
		t.Helper()
		if err := db.SyncPowerTasks(ctx); err != nil {
			t.Fatal(err)
		}
		tasks, err := db.LeasePowerTasks(ctx, time.Minute, 10)
		if err != nil || len(tasks) != want {
			t.Fatalf("leased %+v (%v), want %d", tasks, err, want)
		}
		return tasks
	}

	m1 := newMachine("n1", "52:54:00:f0:00:01", true)
	d1 := deploy(m1)
	first := lease(1)[0]
	if first.Kind != postgres.PowerTaskDeploy || first.Operation != d1 || first.Issued || first.Attempts != 0 {
		t.Fatalf("task %+v", first)
	}
	lease(0) // leased: nobody else takes it
	if err := db.MarkPowerIssued(ctx, first); err != nil {
		t.Fatal(err)
	}

	// The operator releases while the attempt runs.
	off := true
	if _, err := ms.Release(ctx, m1, machine.ReleaseRequest{PowerOff: &off}, machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	lease(0) // the deploy attempt still holds the machine
	if err := db.StillPowerTask(ctx, first); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("still the deploy attempt's: %v", err)
	}
	if err := db.MarkPowerIssued(ctx, first); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("mark issued after the release: %v", err)
	}
	if err := db.FinishPowerTask(ctx, first, true, 1, 0, ""); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("finish the deploy attempt: %v", err)
	}
	rel := lease(1)[0] // now the release's turn
	if rel.Kind != postgres.PowerTaskRelease || rel.Issued || rel.Attempts != 0 {
		t.Fatalf("release task %+v", rel)
	}
	if err := db.FinishPowerTask(ctx, rel, false, 1, 0, "BMC unreachable"); err != nil {
		t.Fatal(err)
	}
	again := lease(1)[0]
	if again.Kind != postgres.PowerTaskRelease || again.Attempts != 1 {
		t.Fatalf("release task after a failed attempt %+v", again)
	}
	// The attempt that switched it off ends the release, then its task.
	if _, err := ms.ReleaseFinished(ctx, m1, true, "", machine.Meta{}); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishPowerTask(ctx, rel, true, 2, 0, ""); !errors.Is(err, postgres.ErrLeaseLost) {
		t.Fatalf("an attempt whose lease was taken over finishes: %v", err)
	}

	// A power on sent whose outcome was lost: the next attempt knows.
	m2 := newMachine("n2", "52:54:00:f0:00:02", true)
	deploy(m2)
	t2 := lease(1)[0]
	if err := db.MarkPowerIssued(ctx, t2); err != nil {
		t.Fatal(err)
	}
	if err := db.FinishPowerTask(ctx, t2, false, t2.Attempts, 0, "the region stopped during the attempt"); err != nil {
		t.Fatal(err)
	}
	if next := lease(1)[0]; !next.Issued || next.Attempts != 0 || next.MachineID != m2 {
		t.Fatalf("the attempt after a lost power on: %+v", next)
	}

	// Parameters set after the deployment started: no power work.
	m3 := newMachine("n3", "52:54:00:f0:00:03", false)
	deploy(m3)
	if _, _, err := ps.Set(ctx, m3, power.SetRequest{Driver: "shellbmc", Address: "/bmc/n3"}, power.Meta{}); err != nil {
		t.Fatal(err)
	}
	lease(0)
	if w, err := db.PowerWorkOf(ctx, m3); err != nil || w != nil {
		t.Fatalf("power work of a deployment given parameters late: %+v %v", w, err)
	}
}
