package schema_test

import (
	"strings"
	"testing"

	"github.com/rackplane/rackplane/schema"
)

// TestDHCPLeasesChangedContract validates documents written from the
// schema file alone, as a rack in another language would send them.
func TestDHCPLeasesChangedContract(t *testing.T) {
	set, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	const name = "rackplane.rack.dhcp_leases_changed.v1"
	envelope := func(data string) []byte {
		return []byte(`{"specversion":"1.0","id":"0190a0b1-2222-7333-8444-555566667777",
			"source":"rackplane/rack/0190a0b1-1111-7222-8333-444455556666",
			"type":"` + name + `","subject":"rack/0190a0b1-1111-7222-8333-444455556666",
			"time":"2026-03-01T12:00:00Z","data":` + data + `}`)
	}
	good := `{"mode":"proxy","since":"2026-03-01T11:59:50Z","until":"2026-03-01T12:00:00Z",
		"changes":[{"action":"boot_acked","mac":"52:54:00:12:34:56","boot_file":"undionly.kpxe","count":3,"at":"2026-03-01T11:59:59Z"}],
		"ignored":{"not_netboot":12,"not_owner":4},"malformed":2}`
	if err := set.ValidateJSON(name, envelope(good)); err != nil {
		t.Fatalf("good document refused: %v", err)
	}
	for _, bad := range []string{
		`{"mode":"proxy","since":"2026-03-01T11:59:50Z"}`,
		strings.Replace(good, `"count":3`, `"count":-1`, 1),
		strings.Replace(good, `"malformed":2`, `"malformed":0`, 1),
		strings.Replace(good, `"changes":[`, `"changes":[{"action":"acked","mac":"52:54:00:12:34:56","ip":"10.0.0.300","count":1,"at":"2026-03-01T11:59:59Z"},`, 1),
	} {
		if err := set.ValidateJSON(name, envelope(bad)); err == nil {
			t.Errorf("bad document accepted: %s", bad)
		}
	}
	// The schema belongs to the rack: a region source is refused.
	regionSourced := strings.Replace(string(envelope(good)), `"rackplane/rack/0190a0b1-1111-7222-8333-444455556666"`, `"rackplane/region"`, 1)
	if err := set.ValidateJSON(name, []byte(regionSourced)); err == nil {
		t.Error("a region-sourced dhcp_leases_changed was accepted")
	}
}
