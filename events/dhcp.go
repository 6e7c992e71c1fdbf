package events

import "time"

// TypeDHCPLeasesChanged carries what a rack's DHCP server did during one
// interval: the lease and boot offers it made, coalesced per client and
// bounded in number, and counters of what it ignored. A rack sends at
// most one per interval, and none when nothing happened, so
// unauthenticated DHCP traffic never becomes one event per packet.
const TypeDHCPLeasesChanged = "rackplane.rack.dhcp_leases_changed.v1"

// DHCP lease actions of a DHCPLeaseChange.
const (
	DHCPOffered     = "offered"      // managed: an address was offered
	DHCPAcked       = "acked"        // managed: a lease was given or renewed
	DHCPRefused     = "refused"      // managed: a request was refused (NAK)
	DHCPReleased    = "released"     // managed: the client gave its lease back
	DHCPDeclined    = "declined"     // managed: the client found the address in use
	DHCPBootOffered = "boot_offered" // proxy: boot information offered (port 67)
	DHCPBootAcked   = "boot_acked"   // proxy: boot information acknowledged (port 4011)
)

// DHCPLeasesChanged is the data of TypeDHCPLeasesChanged.
type DHCPLeasesChanged struct {
	// Mode is the server's mode: proxy or managed.
	Mode string `json:"mode"`
	// Since and Until bound the interval the event covers.
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Changes lists one entry per action, client and address.
	Changes []DHCPLeaseChange `json:"changes,omitempty"`
	// MoreChanges counts the changes past the rack's per-event limit.
	MoreChanges int64 `json:"more_changes,omitempty"`
	// Ignored counts packets not answered, by reason (not_netboot,
	// unsupported_arch, not_owner, other_server, no_subnet, no_address,
	// offer_limit, message_type, error).
	Ignored map[string]int64 `json:"ignored,omitempty"`
	// Malformed counts packets that were not DHCP at all.
	Malformed int64 `json:"malformed,omitempty"`
}

// DHCPLeaseChange is one action on one client in a DHCPLeasesChanged.
type DHCPLeaseChange struct {
	Action   string `json:"action"`
	MAC      string `json:"mac"`
	IP       string `json:"ip,omitempty"`
	Subnet   string `json:"subnet,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Expires is the lease's end (acked) or the end of a decline's hold.
	Expires  *time.Time `json:"expires,omitempty"`
	BootFile string     `json:"boot_file,omitempty"`
	// Count is how often it happened in the interval; At is the last time.
	Count int64     `json:"count"`
	At    time.Time `json:"at"`
}
