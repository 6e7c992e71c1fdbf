package api

import (
	"bytes"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/rackcall"
	"github.com/rackplane/rackplane/region/volume"
)

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
		var req volume.CreateRequest
		err := DecodeJSON(r, &req)
		if err == nil {
			err = req.Check()
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
		if _, err := rackcall.Encode(method, events.StorageRPCSchema(method, events.PartRequest), sreq); err != nil {
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
			var b volume.ActionRequest
			err := DecodeJSON(r, &b)
			if err == nil {
				err = b.Check(a)
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
			req, err := volume.Request(a, postgres.Volume{ID: vid, Provider: "loop"}, b)
			if err != nil {
				// Only a new owner that is no UUID is left to refuse.
				if a != events.StorageActionSetinfo || rackplane.ErrorCode(err) != rackplane.EINVALID {
					t.Fatalf("%s %q: %v", a, body, err)
				}
				continue
			}
			method := events.StorageMethod(a)
			if _, err := rackcall.Encode(method, events.StorageRPCSchema(method, events.PartRequest), req); err != nil {
				t.Fatalf("%s %q: the rack's request breaks the schema: %v", a, body, err)
			}
		}
	})
}
