package subnet_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/machine/machinetest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/subnet"
)

// lookups is the region's database, counting how often the service asks
// it for the machines of reservations.
type lookups struct {
	*postgres.DB
	n atomic.Int64
}

func (l *lookups) HostnamesByMAC(ctx context.Context, macs []string) (map[string]string, error) {
	l.n.Add(1)
	return l.DB.HostnamesByMAC(ctx, macs)
}

// TestReservationsSaved: on create and on update, the reservations are
// saved with canonical MACs and, where none is given, the hostname of
// the machine with the MAC; the caller's reservations are left as they
// were; and however many there are, their machines are looked up at
// once.
func TestReservationsSaved(t *testing.T) {
	ctx := context.Background()
	db := &lookups{DB: machinetest.Database(t)}
	machines := machine.NewService(db.DB, nil, slog.New(slog.DiscardHandler))
	for i, name := range []string{"node1", "node2"} {
		if _, err := machines.Create(ctx, machine.CreateRequest{Hostname: name, MACs: []string{fmt.Sprintf("52:54:00:00:01:%02x", i+1)}}, machine.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	svc := subnet.NewService(db, nil, slog.New(slog.DiscardHandler))
	rack, cidr := machinetest.RackID, netip.MustParsePrefix("10.40.0.0/24")
	var id string
	for _, tt := range []struct {
		name     string
		explicit string // hostname given with the first reservation
	}{
		{"create", ""},
		{"update", "given"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// MACs as an operator types them; the first two are the machines'.
			var res []events.SubnetReservation
			for i := range 100 {
				res = append(res, events.SubnetReservation{MAC: fmt.Sprintf("52-54-00-00-01-%02X", i+1), IP: netip.AddrFrom4([4]byte{10, 40, 0, byte(i + 2)})})
			}
			res[0].Hostname = tt.explicit
			sent := slices.Clone(res)
			db.n.Store(0)
			var saved postgres.Subnet
			var err error
			if id == "" {
				saved, err = svc.Create(ctx, subnet.Fields{RackID: &rack, CIDR: &cidr, Reservations: &res}, subnet.Meta{})
				id = saved.ID
			} else {
				_, saved, err = svc.Update(ctx, id, subnet.Fields{Reservations: &res}, subnet.Meta{})
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res, sent) {
				t.Fatalf("the caller's reservations were changed: %+v", res[:3])
			}
			want := map[int]string{0: "node1", 1: "node2"}
			if tt.explicit != "" {
				want[0] = tt.explicit
			}
			for i, r := range saved.Reservations {
				if mac := fmt.Sprintf("52:54:00:00:01:%02x", i+1); r.MAC != mac || r.Hostname != want[i] {
					t.Fatalf("reservation %d saved as %s %q, want %s %q", i, r.MAC, r.Hostname, mac, want[i])
				}
			}
			if n := db.n.Load(); n > 1 {
				t.Fatalf("%d lookups of the reservations' machines, want one", n)
			}
		})
	}
}
