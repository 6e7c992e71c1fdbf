package events

import (
	"fmt"
	"strings"
)

// TypeInventoryReported carries a machine's hardware inventory from the
// rack the commissioning agent reported it to, on stream machine/<id>.
// The rack passes the agent's document on as it checked it
// (DecodeInventory); the region checks it again, whole, before it is
// appended (Validator.Decode), so a malformed inventory never reaches a
// projection in part.
const TypeInventoryReported = "rackplane.rack.inventory_reported.v1"

// InventoryReported is the data of TypeInventoryReported. OperationID is
// the commissioning operation the agent ran under ("" when the agent was
// started without one).
type InventoryReported struct {
	MachineID   string    `json:"machine_id"`
	OperationID string    `json:"operation_id"`
	Inventory   Inventory `json:"inventory"`
}

// TypeMachineTagsSet replaces a machine's tags, operators' labels for
// finding and grouping machines (GET /api/v1/machines?tag=), on stream
// machine/<id>.
const TypeMachineTagsSet = "rackplane.region.machine_tags_set.v1"

// MachineTags is the data of TypeMachineTagsSet: every tag the machine
// has after the change, sorted, each once.
type MachineTags struct {
	MachineID string   `json:"machine_id"`
	Tags      []string `json:"tags"`
}

// MaxMachineTags bounds a machine's tags.
const MaxMachineTags = 32

// checkInventoryReported is what the schema cannot say of an
// inventory_reported event: the inventory's own rules (Inventory.Check),
// and that the event is on the stream of the machine it names.
func checkInventoryReported(e Event) error {
	var d InventoryReported
	if err := e.DecodeData(&d); err != nil {
		return err
	}
	if want := MachineStreamName(d.MachineID); e.Subject != want {
		return fmt.Errorf("subject %s: an inventory of machine %s belongs on %s", e.Subject, d.MachineID, want)
	}
	if errs := d.Inventory.Problems(); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = "inventory." + err.Error()
		}
		return fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return nil
}
