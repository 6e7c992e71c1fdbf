package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

// TestInventoryReportedIsCheckedWhole: the validator refuses, as a schema
// failure, an inventory_reported whose inventory passes the schema but
// not Inventory.Check, or that is on another machine's stream; a good
// one passes.
func TestInventoryReportedIsCheckedWhole(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	rack, machine := uuid.NewString(), uuid.NewString()
	report := func(subject string, inv events.Inventory) events.Event {
		ev, err := events.New(events.RackSource(rack), events.TypeInventoryReported, subject, time.Now(),
			events.InventoryReported{MachineID: machine, OperationID: "", Inventory: inv})
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if err := v.Validate(report(events.MachineStreamName(machine), goodInventory())); err != nil {
		t.Fatalf("good report refused: %v", err)
	}
	dup := goodInventory()
	dup.Disks[1].Name = dup.Disks[0].Name // the schema cannot see this
	fewThreads := goodInventory()
	fewThreads.CPU.Threads = 8
	noCPUModel := goodInventory()
	noCPUModel.CPU.Model = ""
	for _, tt := range []struct {
		name string
		ev   events.Event
		want string
	}{
		{"duplicate disk", report(events.MachineStreamName(machine), dup), `inventory.disks[1].name "sda": also disks[0]`},
		{"threads under cores", report(events.MachineStreamName(machine), fewThreads), "inventory.cpu.threads 8"},
		{"schema", report(events.MachineStreamName(machine), noCPUModel), "model"},
		{"another machine's stream", report(events.MachineStreamName(uuid.NewString()), goodInventory()), "belongs on machine/" + machine},
	} {
		err := v.Validate(tt.ev)
		var re *events.RejectError
		if !errors.As(err, &re) || re.Reason != events.ReasonSchema || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want a schema refusal saying %q", tt.name, err, tt.want)
		}
	}
}
