package events

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Subnet event types. The region models the subnets racks serve in
// managed DHCP mode; each change of one goes to every rack as the whole
// subnet, and only the rack it names serves it.
const (
	TypeSubnetSet     = "rackplane.region.subnet_set.v1"
	TypeSubnetDeleted = "rackplane.region.subnet_deleted.v1"
)

// SubnetStreamPrefix names the event-store streams of subnets.
const SubnetStreamPrefix = "subnet/"

// SubnetStreamName is the event-store stream of a subnet.
func SubnetStreamName(id string) string { return SubnetStreamPrefix + id }

// SubnetSet is the data of TypeSubnetSet: subnet SubnetID, served by rack
// RackID, is now as given. A rack that served it and is not RackID any
// more (the subnet moved) stops serving it.
type SubnetSet struct {
	SubnetID string `json:"subnet_id"`
	RackID   string `json:"rack_id"`
	Subnet
}

// SubnetDeleted is the data of TypeSubnetDeleted: rack RackID no longer
// serves the subnet. When MovedToRackID is set the subnet lives on, served
// by that rack (a subnet_set for it follows): the event goes to the rack
// that loses it, since each rack hears only of its own subnets.
type SubnetDeleted struct {
	SubnetID      string `json:"subnet_id"`
	RackID        string `json:"rack_id"`
	CIDR          string `json:"cidr,omitempty"`
	MovedToRackID string `json:"moved_to_rack_id,omitempty"`
}

// SubnetsRequest asks the region, over RegionRPCSubject(MethodSubnets),
// for every subnet rack RackID serves. A rack asks when it starts: its
// cache and the region stream may both lack a subnet set long ago (the
// stream keeps events for a while only).
type SubnetsRequest struct {
	RackID string `json:"rack_id"`
}

// SubnetsReply answers a SubnetsRequest: the rack's subnets as their
// latest subnet_set carried them.
type SubnetsReply struct {
	Subnets []SubnetSet `json:"subnets"`
}

// Subnet is one subnet a rack's DHCP server hands addresses out on in
// managed mode, in the form it travels in: JSON names, text addresses, a
// lease time in seconds. A rack's local subnets file holds the same form.
type Subnet struct {
	// CIDR is the subnet, such as 10.20.0.0/24.
	CIDR netip.Prefix `json:"cidr"`
	// Interface the subnet is on (default: the rack's -dhcp-interface).
	// Subnets reached through a relay (giaddr) share the relay's
	// interface.
	Interface string `json:"interface,omitempty"`
	// Ranges are the dynamic ranges, inclusive, inside CIDR.
	Ranges     []SubnetRange `json:"ranges,omitempty"`
	Router     netip.Addr    `json:"router,omitzero"`
	DNSServers []netip.Addr  `json:"dns_servers,omitempty"`
	Domain     string        `json:"domain,omitempty"`
	// SearchDomains go out as the domain search list (option 119).
	SearchDomains []string `json:"search_domains,omitempty"`
	// LeaseSeconds is the lease time (0: the rack's default).
	LeaseSeconds int64 `json:"lease_seconds,omitempty"`
	// Reservations pin addresses to MACs; their addresses may lie inside
	// or outside Ranges, but inside CIDR: a reserved address is never
	// handed to another client.
	Reservations []SubnetReservation `json:"reservations,omitempty"`
}

// SubnetRange is an inclusive range of dynamic addresses.
type SubnetRange struct {
	Start netip.Addr `json:"start"`
	End   netip.Addr `json:"end"`
}

// SubnetReservation is the static address of one MAC.
type SubnetReservation struct {
	MAC      string     `json:"mac"`
	IP       netip.Addr `json:"ip"`
	Hostname string     `json:"hostname,omitempty"`
}

// Bounds of a subnet.
const (
	// MaxSubnetPool bounds the dynamic addresses of one subnet, and its
	// reservations, which bounds a rack's lease table.
	MaxSubnetPool = 1 << 16
	// MinLeaseSeconds and MaxLeaseSeconds bound a subnet's lease time.
	MinLeaseSeconds = 60
	MaxLeaseSeconds = 365 * 24 * 3600
	// MaxSearchDomains bounds the search list (it must fit option 119).
	MaxSearchDomains = 6
)

// Validate reports every problem of s in one error.
func (s Subnet) Validate() error { return errors.Join(s.Problems()...) }

// Problems lists every problem of s, each naming its field.
func (s Subnet) Problems() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	p := s.CIDR
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 || p.Bits() < 8 || p != p.Masked() {
		bad("cidr %q: want an IPv4 network of /8 to /30 with no host bits, such as 10.20.0.0/24", s.CIDR)
		return errs // nothing else can be checked against it
	}
	in := func(a netip.Addr) bool { return IsHostAddr(p, a) }
	if s.Interface != "" && !ValidInterfaceName(s.Interface) {
		bad("interface %q: want a network interface name (1 to 15 characters, no spaces or slashes)", s.Interface)
	}
	var pool uint64
	for i, r := range s.Ranges {
		switch {
		case !in(r.Start) || !in(r.End):
			bad("ranges[%d] %s-%s: both ends must be host addresses of %s", i, r.Start, r.End, p)
		case r.End.Less(r.Start):
			bad("ranges[%d] %s-%s: end before start", i, r.Start, r.End)
		default:
			pool += uint64(addrU32(r.End)-addrU32(r.Start)) + 1
			for j := range i {
				o := s.Ranges[j]
				if !(r.End.Less(o.Start) || o.End.Less(r.Start)) {
					bad("ranges[%d] %s-%s overlaps ranges[%d]", i, r.Start, r.End, j)
				}
			}
		}
	}
	if pool > MaxSubnetPool {
		bad("ranges: %d dynamic addresses, more than %d", pool, MaxSubnetPool)
	}
	if s.Router.IsValid() && !in(s.Router) {
		bad("router %s: not a host address of %s", s.Router, p)
	}
	for i, d := range s.DNSServers {
		if !d.Is4() {
			bad("dns_servers[%d] %s: want an IPv4 address", i, d)
		}
	}
	if len(s.DNSServers) > 8 {
		bad("dns_servers: %d servers, at most 8", len(s.DNSServers))
	}
	if !ValidDomain(s.Domain) {
		bad("domain %q: want a DNS name", s.Domain)
	}
	for i, d := range s.SearchDomains {
		if d == "" || !ValidDomain(d) {
			bad("search_domains[%d] %q: want a DNS name", i, d)
		}
	}
	if len(s.SearchDomains) > MaxSearchDomains {
		bad("search_domains: %d, at most %d", len(s.SearchDomains), MaxSearchDomains)
	}
	if s.LeaseSeconds != 0 && (s.LeaseSeconds < MinLeaseSeconds || s.LeaseSeconds > MaxLeaseSeconds) {
		bad("lease_seconds %d: want %d to %d (or 0 for the rack's default)", s.LeaseSeconds, MinLeaseSeconds, MaxLeaseSeconds)
	}
	if len(s.Reservations) > MaxSubnetPool {
		bad("reservations: %d, more than %d", len(s.Reservations), MaxSubnetPool)
	}
	macs, ips := map[string]int{}, map[netip.Addr]int{}
	for i, r := range s.Reservations {
		mac, err := CanonicalMAC(r.MAC)
		if err != nil {
			bad("reservations[%d]: %v", i, err)
		} else if j, dup := macs[mac]; dup {
			bad("reservations[%d]: MAC %s is reserved again (reservations[%d])", i, mac, j)
		} else {
			macs[mac] = i
		}
		switch j, dup := ips[r.IP]; {
		case !in(r.IP):
			bad("reservations[%d] ip %s: not a host address of %s", i, r.IP, p)
		case r.IP == s.Router:
			bad("reservations[%d] ip %s: is the router's address", i, r.IP)
		case dup:
			bad("reservations[%d] ip %s: reserved again (reservations[%d])", i, r.IP, j)
		default:
			ips[r.IP] = i
		}
		if r.Hostname != "" && !ValidHostLabel(r.Hostname) {
			bad("reservations[%d] hostname %q: want a host name (letters, digits, hyphens; 63 at most)", i, r.Hostname)
		}
	}
	return errs
}

// IsHostAddr reports whether a is an IPv4 host address of p: inside it,
// and neither its network nor its broadcast address.
func IsHostAddr(p netip.Prefix, a netip.Addr) bool {
	last := addrU32(p.Addr()) | (1<<(32-p.Bits()) - 1)
	return a.Is4() && p.Contains(a) && a != p.Addr() && addrU32(a) != last
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// ValidHostLabel reports whether h is one DNS label: letters, digits and
// inner hyphens, 63 characters at most.
func ValidHostLabel(h string) bool {
	if len(h) == 0 || len(h) > 63 || h[0] == '-' || h[len(h)-1] == '-' {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidDomain reports whether d is empty or a DNS name.
func ValidDomain(d string) bool {
	if d == "" {
		return true
	}
	if len(d) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(d, "."), ".") {
		if !ValidHostLabel(label) {
			return false
		}
	}
	return true
}

// ValidInterfaceName reports whether n can name a Linux network
// interface.
func ValidInterfaceName(n string) bool {
	if n == "" || len(n) > 15 || n == "." || n == ".." {
		return false
	}
	for _, c := range n {
		if c <= ' ' || c == '/' || c == ':' || c >= 0x7f {
			return false
		}
	}
	return true
}
