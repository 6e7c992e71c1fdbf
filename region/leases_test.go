package region_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
)

type leaseOut struct {
	RackID          string `json:"rack_id"`
	MAC, IP, Subnet string
	Hostname        string
	LastAction      string `json:"last_action"`
	Expires         *time.Time
	Count           int64
	MachineHostname string `json:"machine_hostname"`
}

type leasesOut struct {
	Leases []leaseOut
	Next   string
}

func leaseKeys(ls []leaseOut) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.IP+" "+l.MAC)
	}
	return out
}

// TestLeasesFromRackEvents: racks publish dhcp_leases_changed events
// through NATS on their own subjects; GET /api/v1/subnets/{id}/leases and
// GET /api/v1/leases show the current leases: a subnet's are those its
// own rack gave of its addresses, a release or an expiry ends one, and an
// event a rack publishes in another rack's name is refused and changes
// nothing.
func TestLeasesFromRackEvents(t *testing.T) {
	h := startRegion(t)
	rackA, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-a"), 200*time.Millisecond)
	rackB, _ := startRack(t, h, filepath.Join(t.TempDir(), "rack-b"), 200*time.Millisecond)
	h.waitRackKnown(rackA.ID())
	h.waitRackKnown(rackB.ID())
	var sn subnetOut
	if code := h.do("POST", "/api/v1/subnets", map[string]any{"rack_id": rackA.ID(), "cidr": "10.60.0.0/24"}, &sn); code != 201 {
		t.Fatalf("create subnet: %d %+v", code, sn)
	}
	var m machineOut
	if code := h.do("POST", "/api/v1/machines", map[string]any{"hostname": "leased1", "macs": []string{"52:54:00:60:00:01"}}, &m); code != 201 {
		t.Fatalf("create machine: %d", code)
	}

	now := time.Now().UTC().Truncate(time.Millisecond)
	hour := now.Add(time.Hour)
	past := now.Add(-time.Minute)
	report := func(rackID, source string, cs ...events.DHCPLeaseChange) string {
		t.Helper()
		ev, err := events.New(events.RackSource(source), events.TypeDHCPLeasesChanged, events.RackStreamName(source), time.Now(),
			events.DHCPLeasesChanged{Mode: "managed", Since: now.Add(-10 * time.Second), Until: time.Now().UTC(), Changes: cs})
		if err != nil {
			t.Fatal(err)
		}
		h.publishRaw(rackID, ev)
		return ev.ID
	}
	acked := func(mac, ip, host string, expires *time.Time) events.DHCPLeaseChange {
		return events.DHCPLeaseChange{Action: events.DHCPAcked, MAC: mac, IP: ip, Subnet: "10.60.0.0/24", Hostname: host,
			Expires: expires, Count: 1, At: now}
	}
	h.logged(report(rackA.ID(), rackA.ID(),
		acked("52:54:00:60:00:01", "10.60.0.10", "leased1", &hour),
		acked("52:54:00:60:00:02", "10.60.0.11", "other", &hour),
		acked("52:54:00:60:00:03", "10.60.0.12", "gone", &past),
		acked("52:54:00:60:00:04", "10.61.0.5", "elsewhere", &hour)))
	// Rack b gives an address of the same range on its own network: not
	// rack a's subnet's.
	h.logged(report(rackB.ID(), rackB.ID(), acked("52:54:00:60:00:05", "10.60.0.13", "b-side", &hour)))

	subnetLeases := func(query string) leasesOut {
		t.Helper()
		var out leasesOut
		if code := h.getJSON("/api/v1/subnets/"+sn.ID+"/leases"+query, &out); code != 200 {
			t.Fatalf("subnet leases%s: %d", query, code)
		}
		return out
	}
	got := subnetLeases("")
	if want := []string{"10.60.0.10 52:54:00:60:00:01", "10.60.0.11 52:54:00:60:00:02"}; !slices.Equal(leaseKeys(got.Leases), want) || got.Next != "" {
		t.Fatalf("subnet leases %+v, want %q", got, want)
	}
	if l := got.Leases[0]; l.RackID != rackA.ID() || l.Hostname != "leased1" || l.MachineHostname != "leased1" || l.LastAction != "acked" ||
		l.Count != 1 || l.Subnet != "10.60.0.0/24" || l.Expires == nil || !l.Expires.Equal(hour) {
		t.Fatalf("lease %+v", l)
	}
	// Pages.
	first := subnetLeases("?limit=1")
	if len(first.Leases) != 1 || first.Next == "" {
		t.Fatalf("first page %+v", first)
	}
	if second := subnetLeases("?limit=1&after=" + first.Next); len(second.Leases) != 1 || second.Leases[0].IP != "10.60.0.11" {
		t.Fatalf("second page %+v", second)
	}
	if one := subnetLeases("?mac=52-54-00-60-00-02"); !slices.Equal(leaseKeys(one.Leases), []string{"10.60.0.11 52:54:00:60:00:02"}) {
		t.Fatalf("by mac %+v", one)
	}

	// A rack publishing in rack a's name on its own subject is refused:
	// the release never reaches the leases.
	spoof := report(rackB.ID(), rackA.ID(), events.DHCPLeaseChange{Action: events.DHCPReleased, MAC: "52:54:00:60:00:01", IP: "10.60.0.10", At: time.Now().UTC(), Count: 1})
	h.eventually(10*time.Second, "the spoofed event refused", func() error {
		var rej struct {
			Rejected []struct {
				EventID string `json:"event_id"`
				Reason  string
			} `json:"rejected_events"`
		}
		h.getJSON("/api/v1/rejected-events", &rej)
		for _, r := range rej.Rejected {
			if r.EventID == spoof {
				return nil
			}
		}
		return fmt.Errorf("rejected %+v", rej)
	})
	if got := subnetLeases(""); len(got.Leases) != 2 {
		t.Fatalf("after the spoofed release: %+v", got)
	}

	// Rack a's own release ends the lease.
	h.logged(report(rackA.ID(), rackA.ID(), events.DHCPLeaseChange{Action: events.DHCPReleased, MAC: "52:54:00:60:00:02", IP: "10.60.0.11",
		Subnet: "10.60.0.0/24", At: time.Now().UTC(), Count: 1}))
	if got := subnetLeases(""); !slices.Equal(leaseKeys(got.Leases), []string{"10.60.0.10 52:54:00:60:00:01"}) {
		t.Fatalf("after the release: %+v", got)
	}

	// Every rack's, filtered.
	all := func(query string) []string {
		t.Helper()
		var out leasesOut
		if code := h.getJSON("/api/v1/leases"+query, &out); code != 200 {
			t.Fatalf("leases%s: %d", query, code)
		}
		return leaseKeys(out.Leases)
	}
	if got, want := all(""), []string{"10.60.0.10 52:54:00:60:00:01", "10.60.0.13 52:54:00:60:00:05", "10.61.0.5 52:54:00:60:00:04"}; !slices.Equal(got, want) {
		t.Fatalf("all leases %q, want %q", got, want)
	}
	if got := all("?rack_id=" + rackB.ID()); !slices.Equal(got, []string{"10.60.0.13 52:54:00:60:00:05"}) {
		t.Fatalf("rack b's leases %q", got)
	}
	if got := all("?subnet=" + sn.ID); !slices.Equal(got, []string{"10.60.0.10 52:54:00:60:00:01"}) {
		t.Fatalf("the subnet's leases %q", got)
	}
	if got := all("?subnet=" + sn.ID + "&rack_id=" + rackB.ID()); len(got) != 0 {
		t.Fatalf("rack b's leases of rack a's subnet %q", got)
	}

	for _, tt := range []struct{ path, want string }{
		{"/api/v1/leases?rack=" + rackA.ID(), `"rack": no such query parameter`},
		{"/api/v1/leases?mac=nope", "mac"},
		{"/api/v1/leases?rack_id=nope", "rack_id"},
		{"/api/v1/leases?subnet=10.60.0.0/24", "want a subnet's id"},
		{"/api/v1/leases?limit=0", "limit"},
		{"/api/v1/leases?after=junk", "after"},
		{"/api/v1/subnets/" + sn.ID + "/leases?rack_id=" + rackA.ID(), `"rack_id": no such query parameter`},
	} {
		var e apiError
		if code := h.getJSON(tt.path, &e); code != 400 || e.Error.Code != rackplane.EINVALID || !strings.Contains(e.Error.Message, tt.want) {
			t.Errorf("GET %s: %d %+v, want 400 with %q", tt.path, code, e, tt.want)
		}
	}
	var e apiError
	if code := h.getJSON("/api/v1/subnets/"+uuid.NewString()+"/leases", &e); code != 404 {
		t.Errorf("leases of an unknown subnet: %d %+v", code, e)
	}
}
