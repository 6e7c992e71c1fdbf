package volume_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/volume"
)

func TestPickRack(t *testing.T) {
	const a, b, c = "0190a3c2-0000-7000-8000-00000000000a", "0190a3c2-0000-7000-8000-00000000000b", "0190a3c2-0000-7000-8000-00000000000c"
	on := func(id, name string) postgres.ProviderOnRack {
		return postgres.ProviderOnRack{RackID: id, RackName: name, Online: true, Valid: true}
	}
	offline := on(a, "rack-a")
	offline.Online = false
	invalid := on(b, "rack-b")
	invalid.Valid, invalid.Reason = false, "create is not executable"
	ref := func(s string) *string { return &s }
	tests := []struct {
		name  string
		racks []postgres.ProviderOnRack
		m     rackplane.Machine
		want  string // rack id, or the conflict's words
	}{
		{"none", nil, rackplane.Machine{}, "no rack reports storage provider p"},
		{"offline and invalid", []postgres.ProviderOnRack{offline, invalid}, rackplane.Machine{},
			"no online rack can use storage provider p: rack rack-a is offline; on rack rack-b it is not usable: create is not executable"},
		{"the usable one", []postgres.ProviderOnRack{offline, invalid, on(c, "rack-c")}, rackplane.Machine{}, c},
		{"least loaded first", []postgres.ProviderOnRack{on(c, "rack-c"), on(a, "rack-a")}, rackplane.Machine{}, c},
		{"the boot rack", []postgres.ProviderOnRack{on(c, "rack-c"), on(a, "rack-a")}, rackplane.Machine{BootRackID: ref(a)}, a},
		{"the deploy rack when the boot rack cannot", []postgres.ProviderOnRack{on(c, "rack-c"), invalid, on(a, "rack-a")},
			rackplane.Machine{BootRackID: ref(b), DeployRackID: ref(a)}, a},
		{"any when the machine's racks cannot", []postgres.ProviderOnRack{offline, on(c, "rack-c")}, rackplane.Machine{BootRackID: ref(a)}, c},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := volume.PickRack("p", tt.racks, tt.m)
			if strings.Contains(tt.want, " ") {
				if rackplane.ErrorCode(err) != rackplane.ECONFLICT || rackplane.ErrorMessage(err) != tt.want {
					t.Fatalf("got %+v %v, want conflict %q", got, err, tt.want)
				}
				return
			}
			if err != nil || got.RackID != tt.want {
				t.Fatalf("got %+v %v, want rack %s", got, err, tt.want)
			}
		})
	}
}
