package subnets_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/rack/subnets"
)

// FuzzReceive: whatever arrives on the region stream, the rack neither
// panics nor keeps a subnet that breaks the rules.
func FuzzReceive(f *testing.F) {
	id := uuid.NewString()
	for _, d := range []any{
		events.SubnetSet{SubnetID: id, RackID: rackID, Subnet: subnet("10.20.0.0/24", "10.20.0.10")},
		events.SubnetDeleted{SubnetID: id, RackID: rackID},
	} {
		typ := events.TypeSubnetSet
		if _, ok := d.(events.SubnetDeleted); ok {
			typ = events.TypeSubnetDeleted
		}
		e, err := events.New(events.RegionSource, typ, events.SubnetStreamName(id), time.Now(), d)
		if err != nil {
			f.Fatal(err)
		}
		raw, err := events.Encode(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"type":"rackplane.region.subnet_set.v1","data":{"cidr":"10.0.0.0/8","ranges":[{"start":"10.0.0.1","end":"10.255.255.254"}]}}`))
	c, err := subnets.New(subnets.Config{RackID: rackID, DataDir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_ = c.Receive(raw, 1)
		for _, s := range c.Subnets() {
			if err := s.Validate(); err != nil {
				t.Fatalf("kept an invalid subnet: %v", err)
			}
		}
	})
}
