package events_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/schema"
)

func TestEveryTypeHasASchemaAndSubject(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	types := []string{events.TypeRackRegistered, events.TypeHeartbeat, events.TypeEventsDropped, events.TypeRackOffline,
		events.TypeRackOnline, events.TypeCapabilitiesReported, events.TypeCapabilitiesDiverged, events.TypeLicenceKeySet,
		events.TypeTokenCreated, events.TypeTokenRevoked, events.TypeMachineCreated, events.TypeMachineUpdated,
		events.TypeMachineDeleted, events.TypeMachineDeploying, events.TypeMachineDeployed, events.TypeMachineReleased,
		events.TypeMachineFailed, events.TypePreseedVersionCreated, events.TypePreseedServed, events.TypeBootDecisionSet,
		events.TypeBootDecisionCleared, events.TypeBootHandoff, events.TypeBootTransfer, events.TypeBootRequestRejected, events.TypeBootRequestsSummarized,
		events.TypeHandoffFileDeleted, events.TypeImageImported, events.TypeImageImportFailed, events.TypeImageRemoved,
		events.TypeImageBlobRemoved, events.TypeImageCorrupt, events.TypeVolumeActionCompleted, events.TypeStorageProvidersChanged, events.TypeVolumeRequested,
		events.TypeMachineCommissioning, events.TypeMachineCommissioned, events.TypeMachineReleasing, events.TypeMachineBroken,
		events.TypeMachineFixed, events.TypeMachineRescueEntered, events.TypeMachineRescueExited, events.TypeMachineErasing,
		events.TypeDHCPLeasesChanged, events.TypeSubnetSet, events.TypeSubnetDeleted,
		events.TypeRackJoined, events.TypeRackRevoked, events.TypeRackRetired, events.TypeJoinTokenCreated, events.TypeJoinTokenRevoked, events.TypeDiscoveryRefused,
		events.TypePowerActionCompleted, events.TypePowerParametersSet, events.TypePowerParametersCleared, events.TypePowerActionRequested, events.TypePowerStateChanged,
		events.TypeInventoryReported, events.TypeMachineTagsSet, events.TypeAgentStepReported, events.TypeAgentFinished,
		events.TypeAgentScriptReported, events.TypeCommissioningScriptSet, events.TypeCommissioningScriptDeleted}
	for _, typ := range types {
		if !set.Has(typ) {
			t.Errorf("type %s has no schema file", typ)
		}
		if events.Name(typ) == "" {
			t.Errorf("type %s has no short name", typ)
		}
	}
	// And every event schema file is a type some code knows.
	known := map[string]bool{}
	for _, typ := range types {
		known[typ] = true
	}
	for _, n := range set.Names() {
		if strings.HasPrefix(n, "rackplane.") && !known[n] {
			t.Errorf("schema %s names a type no code emits", n)
		}
	}
}

// TestEveryRPCMethodHasSchemas: each rack rpc method whose bodies have
// schema files names files that exist, for request and reply alike.
func TestEveryRPCMethodHasSchemas(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range []string{events.MethodImagesList, events.MethodImagesImport, events.MethodImagesImports,
		events.MethodImagesDelete, events.MethodImagesGC, events.MethodImagesScrub} {
		names = append(names, events.ImagesRPCSchema(m, events.PartRequest), events.ImagesRPCSchema(m, events.PartReply))
	}
	methods := []string{events.MethodStorageProviders}
	for _, a := range events.StorageActions {
		methods = append(methods, events.StorageMethod(a))
	}
	for _, m := range methods {
		names = append(names, events.StorageRPCSchema(m, events.PartRequest), events.StorageRPCSchema(m, events.PartReply))
	}
	names = append(names, events.PowerRPCSchema(events.PartRequest), events.PowerRPCSchema(events.PartReply))
	for _, n := range names {
		if !set.Has(n) {
			t.Errorf("no schema file %s.json", n)
		}
	}
	for _, tt := range []struct{ got, want string }{
		{events.StorageMethod(events.StorageActionSnapshot), "storage.snapshot"},
		{events.StorageRPCSchema(events.StorageMethod(events.StorageActionGrow), events.PartRequest), "storage_rpc_action.request.v1"},
		{events.StorageRPCSchema(events.MethodStorageProviders, events.PartReply), "storage_rpc_providers.reply.v1"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, name := range []string{"create", "close"} {
		if a, ok := events.ParseStorageAction(name); !ok || string(a) != name {
			t.Errorf("ParseStorageAction(%q) = %q, %t", name, a, ok)
		}
	}
	for _, name := range []string{"", "CREATE", "providers", "create ", "../create"} {
		if a, ok := events.ParseStorageAction(name); ok {
			t.Errorf("ParseStorageAction(%q) = %q, want none", name, a)
		}
	}
}

func TestSubjects(t *testing.T) {
	rack := uuid.NewString()
	tests := []struct{ got, want string }{
		{events.RackEventSubject(rack, events.TypeRackRegistered), "rackplane.rack." + rack + ".event.rack_registered"},
		{events.RegionEventSubject(events.TypeRackOffline), "rackplane.region.event.rack_offline"},
		{events.RackRPCSubject(rack, "info"), "rackplane.rack." + rack + ".rpc.info"},
		{events.RegionRPCSubject("r1", "preseed"), "rackplane.region.rpc.r1.preseed"},
		{events.RegionRPCWildcard("preseed"), "rackplane.region.rpc.*.preseed"},
		{events.RegionRackEventSubject("r1", events.TypeBootDecisionSet), "rackplane.region.rack.r1.event.boot_decision_set"},
		{events.HeartbeatSubject(rack), "rackplane.rack." + rack + ".heartbeat"},
		{events.RackIDFromSubject("rackplane.rack." + rack + ".event.x"), rack},
		{events.RackIDFromSubject("rackplane.region.event.x"), ""},
		{events.RackIDFromSource(events.RackSource(rack)), rack},
		{events.RackIDFromSource(events.RegionSource), ""},
		// Event-store stream names, as the envelope schema's subject
		// patterns and the Postgres projections expect them.
		{events.RackStreamName(rack), "rack/" + rack},
		{events.MachineStreamName("m1"), "machine/m1"},
		{events.VolumeStreamName("v1"), "volume/v1"},
		{events.ImageStreamName(rack, "store"), "image/" + rack + "/store"},
		{events.PreseedStreamName("p1"), "preseed/p1"},
		{events.TokenStreamName("t1"), "token/t1"},
		{events.JoinTokenStreamName("j1"), "join-token/j1"},
		{events.ImagesRPCSchema(events.MethodImagesGC, events.PartRequest), "images_rpc_gc.request.v1"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestDecode(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	rack := uuid.NewString()
	good, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
		events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
	goodRaw, _ := events.Encode(good)
	mutate := func(f func(m map[string]any)) []byte {
		var m map[string]any
		_ = json.Unmarshal(goodRaw, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name   string
		raw    []byte
		reason string
	}{
		{"good", goodRaw, ""},
		{"not json", []byte("{"), events.ReasonMalformed},
		{"an array", []byte("[]"), events.ReasonMalformed},
		{"no type", mutate(func(m map[string]any) { delete(m, "type") }), events.ReasonMalformed},
		{"unknown type", mutate(func(m map[string]any) { m["type"] = "rackplane.rack.nope.v1" }), events.ReasonUnknownType},
		{"bad id", mutate(func(m map[string]any) { m["id"] = "x" }), events.ReasonSchema},
		{"extra field", mutate(func(m map[string]any) { m["extra"] = 1 }), events.ReasonSchema},
		{"data breaks schema", mutate(func(m map[string]any) { m["data"] = map[string]any{"name": 5} }), events.ReasonSchema},
		{"region type from a rack", mutate(func(m map[string]any) { m["type"] = events.TypeRackOffline }), events.ReasonSchema},
		{"too large", append(goodRaw, make([]byte, events.MaxEventSize)...), events.ReasonTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := v.Decode(tt.raw)
			if tt.reason == "" {
				if err != nil || ev.ID != good.ID {
					t.Fatalf("Decode = %+v, %v", ev, err)
				}
				return
			}
			var re *events.RejectError
			if !errors.As(err, &re) || re.Reason != tt.reason {
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	rack := uuid.NewString()
	good, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
		events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
	raw, _ := events.Encode(good)
	f.Add(raw)
	f.Add([]byte(`{"type":"rackplane.rack.heartbeat.v1"}`))
	f.Add([]byte(`[1,2,3]`))
	v, err := events.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := v.Decode(raw)
		if err == nil {
			// Whatever passes validation must survive a round trip.
			again, err := events.Encode(ev)
			if err != nil {
				t.Fatalf("valid event does not encode: %v", err)
			}
			if _, err := v.Decode(again); err != nil {
				t.Fatalf("valid event does not validate after a round trip: %v\n%s", err, again)
			}
			return
		}
		var re *events.RejectError
		if !errors.As(err, &re) {
			t.Fatalf("error without a reason: %v", err)
		}
	})
}

// A boot decision's NICs are checked as the inventory's are: a NIC with
// a name the kernel would not give, a link state that is none or a MAC
// in another form is refused.
func TestBootDecisionNICsSchema(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	good := events.BootNIC{MAC: "52:54:00:00:00:01", Name: "enp1s0", Boot: true, Link: events.LinkUp}
	for _, tc := range []struct {
		name string
		nics []events.BootNIC
		ok   bool
	}{
		{"none", nil, true},
		{"boot and another", []events.BootNIC{good, {MAC: "52:54:00:00:00:02", Link: events.LinkDown}}, true},
		{"name with a space", []events.BootNIC{{MAC: good.MAC, Name: "eth 0"}}, false},
		{"name too long", []events.BootNIC{{MAC: good.MAC, Name: "enp0s31f6np0xyzw"}}, false},
		{"link sideways", []events.BootNIC{{MAC: good.MAC, Link: "sideways"}}, false},
		{"MAC in capitals", []events.BootNIC{{MAC: "52:54:00:00:00:0A"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := events.BootDecision{MAC: "52:54:00:00:00:01", Purpose: events.BootPurposeLocal, NICs: tc.nics}
			e, err := events.New(events.RegionSource, events.TypeBootDecisionSet, "machine/m1", time.Now(), d)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := events.Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Decode(raw)
			if (err == nil) != tc.ok {
				t.Fatalf("decode: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// FuzzSubjectParts: the rack of a subject and the name of a type, which
// the region reads of every message from outside, are what splitting on
// the dots gives: for a subject, rackplane, rack, then the rack, then
// more; for a type, exactly four parts, the third.
func FuzzSubjectParts(f *testing.F) {
	for _, s := range []string{"rackplane.rack.r1.event.x", "rackplane.rack.r1", "rackplane.rack..event", "rackplane.region.event.x",
		"rackplane.rack.rack_registered.v1", "a.b.c", "a.b.c.d.e", "...", "", "rackplane.rack.r1.", "xrackplane.rack.r1.event"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := ""
		if parts := strings.SplitN(s, ".", 4); len(parts) >= 4 && parts[0] == "rackplane" && parts[1] == "rack" {
			want = parts[2]
		}
		if got := events.RackIDFromSubject(s); got != want {
			t.Errorf("RackIDFromSubject(%q) = %q, want %q", s, got, want)
		}
		want = ""
		if parts := strings.Split(s, "."); len(parts) == 4 {
			want = parts[2]
		}
		if got := events.Name(s); got != want {
			t.Errorf("Name(%q) = %q, want %q", s, got, want)
		}
	})
}
