package rackplane

import "time"

// Rack is a rack controller as the region knows it: the projection of its
// events and of the region's liveness events about it.
type Rack struct {
	ID                  string     `json:"id"`
	Name                string     `json:"name"`
	Version             string     `json:"version"`
	Hostname            string     `json:"hostname"`
	Addresses           []string   `json:"addresses"`
	TFTP                []string   `json:"tftp"`
	HTTP                []string   `json:"http"`
	HeartbeatIntervalMS int64      `json:"heartbeat_interval_ms"`
	StartedAt           time.Time  `json:"started_at"`
	FirstSeen           time.Time  `json:"first_seen"`
	LastSeen            time.Time  `json:"last_seen"`
	Online              bool       `json:"online"`
	StatusChangedAt     time.Time  `json:"status_changed_at"`
	LastHeartbeat       *time.Time `json:"last_heartbeat"`
	DroppedEvents       int64      `json:"dropped_events"`
	BootURL             string     `json:"boot_url"`
	// DHCP is what the rack's DHCP server does, as it last registered;
	// nil for a rack that did not say.
	DHCP *RackDHCP `json:"dhcp"`
	// RetiredAt is when the rack was retired, and RetiredBy who retired
	// it: a retired rack is listed only on request, never watched, and
	// offers no images (nil: in service).
	RetiredAt *time.Time `json:"retired_at,omitempty"`
	RetiredBy string     `json:"retired_by,omitempty"`
}

// RackDHCP is what a rack's DHCP server does: Mode off, proxy or managed,
// the interfaces it listens on, and the subnets it serves (managed).
type RackDHCP struct {
	Mode       string   `json:"mode"`
	Interfaces []string `json:"interfaces,omitempty"`
	Subnets    []string `json:"subnets,omitempty"`
}
