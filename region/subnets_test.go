package region_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/dhcp"
	"github.com/rackplane/rackplane/rack/subnets"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
	"github.com/rackplane/rackplane/schema"
)

// subnetOut is a subnet as the API shows it.
type subnetOut struct {
	ID, RackID, CIDR, Interface string
	Reservations                []events.SubnetReservation
	LeaseSeconds                int64 `json:"lease_seconds"`
	Version                     int64
}

func (s *subnetOut) UnmarshalJSON(b []byte) error {
	var v struct {
		ID           string                     `json:"id"`
		RackID       string                     `json:"rack_id"`
		CIDR         string                     `json:"cidr"`
		Interface    string                     `json:"interface"`
		Reservations []events.SubnetReservation `json:"reservations"`
		LeaseSeconds int64                      `json:"lease_seconds"`
		Version      int64                      `json:"version"`
	}
	err := json.Unmarshal(b, &v)
	*s = subnetOut(v)
	return err
}

// rackSubnets reads what a rack cached of the region's subnets.
func rackSubnets(dataDir string) (map[string]events.SubnetSet, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, subnets.File))
	if err != nil {
		return nil, err
	}
	var p struct {
		Subnets map[string]events.SubnetSet `json:"subnets"`
	}
	return p.Subnets, json.Unmarshal(raw, &p)
}

// TestSubnets: an operator creates, lists, changes and deletes subnets
// through the API; every mistake is refused with a message that names
// it; changes are audited and versioned; the rack that serves a subnet
// receives it, serves it, and says so in GET /racks/{id}, and another
// rack does not.
func TestSubnets(t *testing.T) {
	h := startRegion(t)
	dirA := filepath.Join(t.TempDir(), "rack-a")
	cfgA := rackConfig(h, dirA, 200*time.Millisecond)
	cfgA.DHCP.Mode = dhcp.ModeManaged // no subnets of its own: it waits for the region's
	rackA, _ := startRackConfig(t, h, cfgA)
	dirB := filepath.Join(t.TempDir(), "rack-b")
	rackB, _ := startRack(t, h, dirB, 200*time.Millisecond)
	for _, id := range []string{rackA.ID(), rackB.ID()} {
		h.eventually(10*time.Second, "rack registered", func() error {
			if _, code := h.rack(id); code != 200 {
				return fmt.Errorf("GET rack: %d", code)
			}
			return nil
		})
	}
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "node7", "macs": []string{"52:54:00:00:00:07"}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}

	good := func() map[string]any {
		return map[string]any{
			"rack_id": rackA.ID(), "cidr": "10.40.0.0/24", "interface": "rpnone0",
			"ranges": []map[string]string{{"start": "10.40.0.100", "end": "10.40.0.199"}},
			"router": "10.40.0.1", "dns_servers": []string{"10.40.0.1"}, "domain": "lab.example.net",
			"search_domains": []string{"example.net"}, "lease_seconds": 600,
			"reservations": []map[string]string{{"mac": "52-54-00-00-00-07", "ip": "10.40.0.7"}},
		}
	}
	with := func(k string, v any) map[string]any { b := good(); b[k] = v; return b }
	for _, tt := range []struct {
		name string
		body map[string]any
		code int
		want string
	}{
		{"no rack", with("rack_id", nil), 400, "rack_id and cidr are required"},
		{"unknown rack", with("rack_id", uuid.NewString()), 400, "rack_id: no rack"},
		{"rack not a UUID", with("rack_id", "rack-a"), 400, "rack_id \"rack-a\""},
		{"range outside", with("ranges", []map[string]string{{"start": "10.40.0.100", "end": "10.40.1.5"}}), 400,
			"ranges[0] 10.40.0.100-10.40.1.5: both ends must be host addresses of 10.40.0.0/24"},
		{"reservation outside", with("reservations", []map[string]string{{"mac": "52:54:00:00:00:07", "ip": "10.41.0.7"}}), 400,
			"reservations[0] ip 10.41.0.7: not a host address"},
		{"reservation twice", with("reservations", []map[string]string{{"mac": "52:54:00:00:00:07", "ip": "10.40.0.7"},
			{"mac": "52:54:00:00:00:08", "ip": "10.40.0.7"}}), 400, "reservations[1] ip 10.40.0.7: reserved again"},
		{"lease too short", with("lease_seconds", 10), 400, "lease_seconds 10: want 60 to 31536000"},
		{"router outside", with("router", "192.168.1.1"), 400, "router 192.168.1.1"},
		{"bad cidr", with("cidr", "10.40.0.0/33"), 400, "request body"},
		{"unknown field", with("gateway", "10.40.0.1"), 400, "unknown field"},
	} {
		var e apiError
		if code := h.do("POST", "/api/v1/subnets", tt.body, &e); code != tt.code || !strings.Contains(e.Error.Message, tt.want) {
			t.Errorf("%s: %d %q, want %d and a message with %q", tt.name, code, e.Error.Message, tt.code, tt.want)
		}
	}

	code, body, hdr := h.raw("POST", h.api+"/api/v1/subnets", nil, mustJSON(t, good()))
	var sn subnetOut
	if err := json.Unmarshal([]byte(body), &sn); code != 201 || err != nil {
		t.Fatalf("create subnet: %d %s", code, body)
	}
	if hdr.Get("Location") != "/api/v1/subnets/"+sn.ID || hdr.Get("ETag") != `"1"` || sn.Version != 1 {
		t.Fatalf("create: Location %q ETag %q version %d", hdr.Get("Location"), hdr.Get("ETag"), sn.Version)
	}
	if r := sn.Reservations[0]; r.MAC != "52:54:00:00:00:07" || r.Hostname != "node7" {
		t.Fatalf("reservation %+v: want the MAC canonical and the machine's hostname", r)
	}
	var e apiError
	if code := h.do("POST", "/api/v1/subnets", map[string]any{"rack_id": rackA.ID(), "cidr": "10.40.0.128/25"}, &e); code != 409 || !strings.Contains(e.Error.Message, "overlaps subnet "+sn.ID) {
		t.Fatalf("overlapping subnet on the same rack: %d %q", code, e.Error.Message)
	}
	other := with("rack_id", rackB.ID())
	var onB subnetOut
	if code := h.do("POST", "/api/v1/subnets", other, &onB); code != 201 {
		t.Fatalf("the same CIDR on another rack: %d", code)
	}
	var list struct{ Subnets []subnetOut }
	if code := h.getJSON("/api/v1/subnets?rack_id="+rackA.ID(), &list); code != 200 || len(list.Subnets) != 1 || list.Subnets[0].ID != sn.ID {
		t.Fatalf("rack A's subnets: %d %+v", code, list)
	}
	if code := h.getJSON("/api/v1/subnets", &list); code != 200 || len(list.Subnets) != 2 {
		t.Fatalf("every subnet: %d %+v", code, list)
	}

	// A rack that asks for its subnets gets its own, valid against the
	// reply's schema, and no other rack's.
	var raw json.RawMessage
	if err := rpc.Call(t.Context(), h.nc, events.RegionRPCSubject(rackA.ID(), events.MethodSubnets), events.SubnetsRequest{RackID: rackA.ID()}, &raw); err != nil {
		t.Fatal(err)
	}
	schemas, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.ValidateJSON(subnets.ReplySchema, raw); err != nil {
		t.Fatalf("subnets reply breaks its schema: %v\n%s", err, raw)
	}
	var reply events.SubnetsReply
	if err := json.Unmarshal(raw, &reply); err != nil || len(reply.Subnets) != 1 || reply.Subnets[0].SubnetID != sn.ID ||
		reply.Subnets[0].Reservations[0].Hostname != "node7" {
		t.Fatalf("rack A's subnets over rpc: %v %s", err, raw)
	}

	// The rack serves it, and says so; the other rack's copy stays there.
	h.eventually(10*time.Second, "rack A cached the subnet", func() error {
		got, err := rackSubnets(dirA)
		if err != nil {
			return err
		}
		if s, ok := got[sn.ID]; !ok || s.Reservations[0].IP.String() != "10.40.0.7" {
			return fmt.Errorf("cached %+v", got)
		}
		if _, ok := got[onB.ID]; ok {
			return fmt.Errorf("rack A keeps rack B's subnet")
		}
		return nil
	})
	h.eventually(10*time.Second, "GET /racks shows rack A's DHCP", func() error {
		r, _ := h.rack(rackA.ID())
		if r.DHCP == nil || r.DHCP.Mode != "managed" || !slices.Contains(r.DHCP.Subnets, "10.40.0.0/24") {
			return fmt.Errorf("dhcp %+v", r.DHCP)
		}
		return nil
	})
	if r, _ := h.rack(rackB.ID()); r.DHCP == nil || r.DHCP.Mode != "off" {
		t.Fatalf("rack B's DHCP: %+v", r.DHCP)
	}

	// Changes go by version.
	if code, _, _ := h.raw("PATCH", h.api+"/api/v1/subnets/"+sn.ID, map[string]string{"If-Match": `"7"`}, `{"lease_seconds": 1200}`); code != 412 {
		t.Fatalf("stale change: %d", code)
	}
	code, body, hdr = h.raw("PATCH", h.api+"/api/v1/subnets/"+sn.ID, map[string]string{"If-Match": `"1"`},
		`{"reservations": [{"mac": "52:54:00:00:00:07", "ip": "10.40.0.9", "hostname": "n7"}]}`)
	if code != 200 || hdr.Get("ETag") != `"2"` {
		t.Fatalf("change: %d %s", code, body)
	}
	if code, _, _ := h.raw("PATCH", h.api+"/api/v1/subnets/"+sn.ID, nil, `{"ranges": [{"start": "10.40.0.200", "end": "10.40.0.100"}]}`); code != 400 {
		t.Fatalf("change to a backwards range: %d", code)
	}
	h.eventually(10*time.Second, "rack A has the new reservation", func() error {
		got, err := rackSubnets(dirA)
		if err != nil {
			return err
		}
		if ip := got[sn.ID].Reservations[0].IP.String(); ip != "10.40.0.9" {
			return fmt.Errorf("reserved %s", ip)
		}
		return nil
	})

	// Deleted: gone from the region and from the rack.
	if code, _, _ := h.raw("DELETE", h.api+"/api/v1/subnets/"+sn.ID, nil, ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code := h.getJSON("/api/v1/subnets/"+sn.ID, &e); code != 404 {
		t.Fatalf("deleted subnet: %d", code)
	}
	h.eventually(10*time.Second, "rack A dropped the subnet", func() error {
		got, err := rackSubnets(dirA)
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("still cached: %+v", got)
		}
		return nil
	})

	// Audited like every write, failures too; the events are the log.
	var actions []string
	for _, a := range h.audit(events.SubnetStreamName(sn.ID)) {
		actions = append(actions, fmt.Sprintf("%s %d", a.Action, a.Status))
	}
	slices.Sort(actions)
	want := []string{"DELETE /api/v1/subnets/{id} 204", "PATCH /api/v1/subnets/{id} 200", "PATCH /api/v1/subnets/{id} 400",
		"PATCH /api/v1/subnets/{id} 412", "POST /api/v1/subnets 201"}
	if !slices.Equal(actions, want) {
		t.Fatalf("audit of the subnet:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
	var types []string
	for _, e := range regiontest.StreamEvents(t, postgres.New(h.pool, testLogger()), events.SubnetStreamName(sn.ID)) {
		types = append(types, e.Type)
	}
	if !slices.Equal(types, []string{events.TypeSubnetSet, events.TypeSubnetSet, events.TypeSubnetDeleted}) {
		t.Fatalf("subnet stream: %v", types)
	}

	// Without a token nothing is shown.
	resp, err := http.Get(h.api + "/api/v1/subnets")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}

// TestMachineBootFile: a machine's boot file goes into every boot
// decision of its MACs, through changes of its boot; a bad one is refused.
func TestMachineBootFile(t *testing.T) {
	h := startRegion(t)
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "quirky", "macs": []string{"52:54:00:00:01:01"},
		"boot_file": "ipxe-quirk.efi"}, &m); code != 201 {
		t.Fatalf("create: %d", code)
	}
	decision := func() events.BootDecision {
		t.Helper()
		db := postgres.New(h.pool, testLogger())
		d, err := db.BootDecision(t.Context(), "52:54:00:00:01:01")
		if err != nil || d == nil {
			t.Fatalf("boot decision: %v %v", d, err)
		}
		return *d
	}
	if d := decision(); d.BootFile != "ipxe-quirk.efi" {
		t.Fatalf("decision after create: %+v", d)
	}
	for _, tt := range []struct{ body, want string }{
		{`{"boot_file": "has space.efi"}`, "without spaces"},
		{`{"boot_file": "tftp://x/y"}`, "http:// or https://"},
		{`{"boot_file": "` + strings.Repeat("a", 128) + `"}`, "at most 127 bytes"},
	} {
		code, body, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, nil, tt.body)
		if code != 400 || !strings.Contains(body, tt.want) {
			t.Errorf("PATCH %s: %d %s", tt.body, code, body)
		}
	}
	code, body, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, nil, `{"boot_file": "http://10.0.0.1/custom.ipxe"}`)
	if code != 200 || !strings.Contains(body, `"boot_file": "http://10.0.0.1/custom.ipxe"`) {
		t.Fatalf("PATCH boot_file: %d %s", code, body)
	}
	if d := decision(); d.BootFile != "http://10.0.0.1/custom.ipxe" {
		t.Fatalf("decision after the change: %+v", d)
	}
	if code, body, _ := h.raw("PATCH", h.api+"/api/v1/machines/"+m.ID, nil, `{"boot_file": ""}`); code != 200 || strings.Contains(body, "boot_file") {
		t.Fatalf("clearing boot_file: %d %s", code, body)
	}
	if d := decision(); d.BootFile != "" {
		t.Fatalf("decision after clearing: %+v", d)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
