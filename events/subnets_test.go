package events_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
)

func goodSubnet() events.Subnet {
	a := netip.MustParseAddr
	return events.Subnet{
		CIDR: netip.MustParsePrefix("10.20.0.0/24"), Interface: "eth1",
		Ranges:     []events.SubnetRange{{Start: a("10.20.0.100"), End: a("10.20.0.199")}},
		Router:     a("10.20.0.1"),
		DNSServers: []netip.Addr{a("10.20.0.1")}, Domain: "rack1.example.net", SearchDomains: []string{"example.net"},
		LeaseSeconds: 3600,
		Reservations: []events.SubnetReservation{{MAC: "52:54:00:12:34:56", IP: a("10.20.0.10"), Hostname: "node10"}},
	}
}

// TestSubnetProblems: each mistake an operator can make is named, with
// the field it is in; a good subnet has none.
func TestSubnetProblems(t *testing.T) {
	a := netip.MustParseAddr
	for _, tt := range []struct {
		name   string
		change func(*events.Subnet)
		want   string // "" for valid
	}{
		{"good", func(*events.Subnet) {}, ""},
		{"no ranges, reservations only", func(s *events.Subnet) { s.Ranges = nil }, ""},
		{"reservation inside a range", func(s *events.Subnet) { s.Reservations[0].IP = a("10.20.0.150") }, ""},
		{"host bits in cidr", func(s *events.Subnet) { s.CIDR = netip.MustParsePrefix("10.20.0.1/24") }, "cidr"},
		{"IPv6 cidr", func(s *events.Subnet) { s.CIDR = netip.MustParsePrefix("fd00::/64") }, "want an IPv4 network"},
		{"/31", func(s *events.Subnet) { s.CIDR = netip.MustParsePrefix("10.20.0.0/31") }, "/8 to /30"},
		{"range outside cidr", func(s *events.Subnet) { s.Ranges[0].End = a("10.20.1.5") }, "ranges[0] 10.20.0.100-10.20.1.5: both ends must be host addresses"},
		{"range on broadcast", func(s *events.Subnet) { s.Ranges[0].End = a("10.20.0.255") }, "ranges[0]"},
		{"range backwards", func(s *events.Subnet) { s.Ranges[0].Start, s.Ranges[0].End = a("10.20.0.50"), a("10.20.0.40") }, "end before start"},
		{"ranges overlap", func(s *events.Subnet) {
			s.Ranges = append(s.Ranges, events.SubnetRange{Start: a("10.20.0.150"), End: a("10.20.0.160")})
		}, "ranges[1] 10.20.0.150-10.20.0.160 overlaps ranges[0]"},
		{"router outside", func(s *events.Subnet) { s.Router = a("192.168.0.1") }, "router 192.168.0.1"},
		{"dns IPv6", func(s *events.Subnet) { s.DNSServers = []netip.Addr{a("::1")} }, "dns_servers[0]"},
		{"bad domain", func(s *events.Subnet) { s.Domain = "bad domain" }, "domain \"bad domain\""},
		{"bad search domain", func(s *events.Subnet) { s.SearchDomains = []string{"ok.net", "-x"} }, "search_domains[1]"},
		{"lease too short", func(s *events.Subnet) { s.LeaseSeconds = 5 }, "lease_seconds 5: want 60 to 31536000"},
		{"lease too long", func(s *events.Subnet) { s.LeaseSeconds = 400 * 24 * 3600 }, "lease_seconds"},
		{"bad interface", func(s *events.Subnet) { s.Interface = "eth0/../x" }, "interface"},
		{"reservation outside", func(s *events.Subnet) { s.Reservations[0].IP = a("10.99.0.1") }, "reservations[0] ip 10.99.0.1: not a host address of 10.20.0.0/24"},
		{"reservation on router", func(s *events.Subnet) { s.Reservations[0].IP = a("10.20.0.1") }, "is the router's address"},
		{"reservation bad MAC", func(s *events.Subnet) { s.Reservations[0].MAC = "nope" }, "reservations[0]"},
		{"MAC reserved twice", func(s *events.Subnet) {
			s.Reservations = append(s.Reservations, events.SubnetReservation{MAC: "52-54-00-12-34-56", IP: a("10.20.0.11")})
		}, "MAC 52:54:00:12:34:56 is reserved again"},
		{"IP reserved twice", func(s *events.Subnet) {
			s.Reservations = append(s.Reservations, events.SubnetReservation{MAC: "52:54:00:12:34:57", IP: a("10.20.0.10")})
		}, "reservations[1] ip 10.20.0.10: reserved again"},
		{"bad hostname", func(s *events.Subnet) { s.Reservations[0].Hostname = "a_b" }, "hostname \"a_b\""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := goodSubnet()
			s.Ranges = append([]events.SubnetRange(nil), s.Ranges...)
			s.Reservations = append([]events.SubnetReservation(nil), s.Reservations...)
			tt.change(&s)
			err := s.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("valid subnet refused: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("accepted; want an error naming %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestSubnetSetSchema: the event the region emits validates against its
// schema file, and the rack reads back what was sent.
func TestSubnetSetSchema(t *testing.T) {
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	d := events.SubnetSet{SubnetID: id, RackID: uuid.NewString(), Subnet: goodSubnet()}
	e, err := events.New(events.RegionSource, events.TypeSubnetSet, events.SubnetStreamName(id), time.Now(), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(e); err != nil {
		t.Fatalf("subnet_set breaks its schema: %v", err)
	}
	var back events.SubnetSet
	if err := e.DecodeData(&back); err != nil {
		t.Fatal(err)
	}
	if back.CIDR != d.CIDR || back.Reservations[0].IP != d.Reservations[0].IP || back.RackID != d.RackID || back.SearchDomains[0] != "example.net" {
		t.Fatalf("read back %+v, sent %+v", back, d)
	}
	del, err := events.New(events.RegionSource, events.TypeSubnetDeleted, events.SubnetStreamName(id), time.Now(),
		events.SubnetDeleted{SubnetID: id, RackID: d.RackID, CIDR: "10.20.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate(del); err != nil {
		t.Fatalf("subnet_deleted breaks its schema: %v", err)
	}
	bad := d
	bad.RackID = "not-a-uuid"
	e, _ = events.New(events.RegionSource, events.TypeSubnetSet, events.SubnetStreamName(id), time.Now(), bad)
	if err := v.Validate(e); err == nil {
		t.Fatal("a subnet_set without a rack id validates")
	}
}
