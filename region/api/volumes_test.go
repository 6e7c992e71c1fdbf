package api

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
)

func TestPickProviderRack(t *testing.T) {
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
		m     postgres.Machine
		want  string // rack id, or the conflict's words
	}{
		{"none", nil, postgres.Machine{}, "no rack reports storage provider p"},
		{"offline and invalid", []postgres.ProviderOnRack{offline, invalid}, postgres.Machine{},
			"no online rack can use storage provider p: rack rack-a is offline; on rack rack-b it is not usable: create is not executable"},
		{"the usable one", []postgres.ProviderOnRack{offline, invalid, on(c, "rack-c")}, postgres.Machine{}, c},
		{"least loaded first", []postgres.ProviderOnRack{on(c, "rack-c"), on(a, "rack-a")}, postgres.Machine{}, c},
		{"the boot rack", []postgres.ProviderOnRack{on(c, "rack-c"), on(a, "rack-a")}, postgres.Machine{BootRackID: ref(a)}, a},
		{"the deploy rack when the boot rack cannot", []postgres.ProviderOnRack{on(c, "rack-c"), invalid, on(a, "rack-a")},
			postgres.Machine{BootRackID: ref(b), DeployRackID: ref(a)}, a},
		{"any when the machine's racks cannot", []postgres.ProviderOnRack{offline, on(c, "rack-c")}, postgres.Machine{BootRackID: ref(a)}, c},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickProviderRack("p", tt.racks, tt.m)
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

// FuzzCreateVolumeRequest feeds arbitrary bodies to the create endpoint's
// validation: it refuses with EINVALID, or what it accepts makes a
// volume_requested event and a storage.create request that their schemas
// accept.
func FuzzCreateVolumeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"provider":"loop","size_mib":8,"parameters":{"dir":"/srv/v"}}`, `{"provider":"ceph.rbd-1","size_mib":1}`,
		`{"provider":"loop","size_mib":0}`, `{"provider":"../x","size_mib":8}`, `{"provider":"loop","size_mib":1099511627777}`,
		`{"provider":"loop","size_mib":8,"parameters":{"a-b":"x"}}`, `{"provider":"loop","size_mib":8,"parameters":{"a":"\u0000"}}`,
		`{"provider":"loop","size_mib":8,"action":"create"}`, `{}`, `null`, `[]`, "", `{"provider":"loop","size_mib":8} {}`,
	} {
		f.Add([]byte(seed))
	}
	v, err := events.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	const id = "0190a3c2-0000-7000-8000-000000000001"
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/api/v1/machines/"+id+"/volumes", bytes.NewReader(body))
		var req createVolumeRequest
		err := DecodeJSON(r, &req)
		if err == nil {
			err = req.check()
		}
		if err != nil {
			if rackplane.ErrorCode(err) != rackplane.EINVALID || rackplane.ErrorMessage(err) == "" {
				t.Fatalf("body %q: error %v (code %s), want invalid with a message", body, err, rackplane.ErrorCode(err))
			}
			return
		}
		params := req.Parameters
		if params == nil {
			params = map[string]string{}
		}
		ev, err := events.New(events.RegionSource, events.TypeVolumeRequested, events.VolumeStreamName(id), time.Now(),
			events.VolumeRequested{VolumeID: id, MachineID: id, RackID: id, Provider: req.Provider, SizeMiB: req.SizeMiB, Parameters: params})
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(ev); err != nil {
			t.Fatalf("accepted %q, but its volume_requested breaks the schema: %v", body, err)
		}
		method := events.StorageMethod(events.StorageActionCreate)
		sreq := events.StorageRequest{VolumeID: id, Machine: id, Provider: req.Provider, SizeMiB: req.SizeMiB, Parameters: req.Parameters}
		if _, err := encodeRequest(method, events.StorageRPCSchema(method, events.PartRequest), sreq); err != nil {
			t.Fatalf("accepted %q, but the rack's request breaks the schema: %v", body, err)
		}
	})
}

// FuzzVolumeActionBody feeds arbitrary bodies to every volume action: each
// is refused with EINVALID, or takes only the fields of its own action, a
// snapshot name it accepts is one the rack accepts too, and the request
// it makes of the rack is one the storage rpc's schema accepts.
func FuzzVolumeActionBody(f *testing.F) {
	for _, seed := range []string{
		`{"name":"nightly-1"}`, `{"name":"../x"}`, `{"name":"-rf"}`, `{"name":"a b"}`, `{"exclusive":true}`, `{"exclusive":false}`,
		`{"exclusive":"yes"}`, `{"exclusive":null}`, `{"new_size_mib":24}`, `{"machine_id":"x"}`, `{"name":"s","exclusive":true}`,
		`{"action":"snapshot"}`, `{}`, `null`, `[]`, "",
	} {
		f.Add([]byte(seed))
	}
	actions := []events.StorageAction{events.StorageActionAttach, events.StorageActionDetach, events.StorageActionRemove, events.StorageActionGrow, events.StorageActionSetinfo,
		events.StorageActionVerify, events.StorageActionSnapshot, events.StorageActionOpen, events.StorageActionClose}
	const vid = "0190a3c2-0000-7000-8000-000000000001"
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, a := range actions {
			r := httptest.NewRequest("POST", "/api/v1/volumes/"+vid+"/"+string(a), bytes.NewReader(body))
			var b volumeActionRequest
			err := DecodeJSON(r, &b)
			if err == nil {
				err = b.check(a)
			}
			if err != nil {
				if rackplane.ErrorCode(err) != rackplane.EINVALID || rackplane.ErrorMessage(err) == "" {
					t.Fatalf("%s %q: %v (code %s), want invalid with a message", a, body, err, rackplane.ErrorCode(err))
				}
				continue
			}
			switch {
			case b.Name != "" && a != events.StorageActionSnapshot, b.Exclusive != nil && a != events.StorageActionOpen,
				b.NewSizeMiB != 0 && a != events.StorageActionGrow, b.MachineID != "" && a != events.StorageActionSetinfo:
				t.Fatalf("%s took %q", a, body)
			case a == events.StorageActionSnapshot && !events.ValidSnapshotName(b.Name):
				t.Fatalf("snapshot took name %q", b.Name)
			case a == events.StorageActionOpen && b.Exclusive == nil:
				t.Fatalf("open took %q without exclusive", body)
			}
			if a == events.StorageActionSetinfo && b.MachineID != "" {
				continue // the new owner is looked up in the database
			}
			req, err := (&Server{}).actionRequest(context.Background(), a, postgres.Volume{ID: vid, Provider: "loop"}, b)
			if err != nil {
				t.Fatalf("%s %q: %v", a, body, err)
			}
			method := events.StorageMethod(a)
			if _, err := encodeRequest(method, events.StorageRPCSchema(method, events.PartRequest), req); err != nil {
				t.Fatalf("%s %q: the rack's request breaks the schema: %v", a, body, err)
			}
		}
	})
}
