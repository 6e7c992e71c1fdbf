package events

import "time"

// Event types of the foundation. Each has a schema file of the same name
// under schema/. Later capabilities add their own types beside these.
const (
	TypeRackRegistered = "rackplane.rack.rack_registered.v1"
	TypeHeartbeat      = "rackplane.rack.heartbeat.v1"
	TypeEventsDropped  = "rackplane.rack.events_dropped.v1"
	TypeRackOffline    = "rackplane.region.rack_offline.v1"
	TypeRackOnline     = "rackplane.region.rack_online.v1"
)

// RackRegistered is the data of TypeRackRegistered.
type RackRegistered struct {
	Name                string    `json:"name"`
	Version             string    `json:"version"`
	Hostname            string    `json:"hostname,omitempty"`
	Addresses           []string  `json:"addresses,omitempty"`
	TFTP                []string  `json:"tftp,omitempty"`
	HTTP                []string  `json:"http,omitempty"`
	BootURL             string    `json:"boot_url,omitempty"`
	HeartbeatIntervalMS int64     `json:"heartbeat_interval_ms,omitempty"`
	StartedAt           time.Time `json:"started_at"`
	// DHCP is what the rack's DHCP server does (absent: a rack that
	// does not say).
	DHCP *RackDHCP `json:"dhcp,omitempty"`
}

// RackDHCP is what a rack's DHCP server does: Mode off, proxy or managed,
// the interfaces it listens on, and the subnets it serves (managed).
type RackDHCP struct {
	Mode       string   `json:"mode"`
	Interfaces []string `json:"interfaces,omitempty"`
	Subnets    []string `json:"subnets,omitempty"`
}

// Heartbeat is the data of TypeHeartbeat.
type Heartbeat struct {
	Seq            int64 `json:"seq"`
	IntervalMS     int64 `json:"interval_ms"`
	BufferedEvents int64 `json:"buffered_events,omitempty"`
	DroppedEvents  int64 `json:"dropped_events,omitempty"`
}

// EventsDropped is the data of TypeEventsDropped.
type EventsDropped struct {
	Count int64            `json:"count"`
	Since time.Time        `json:"since"`
	Types map[string]int64 `json:"types,omitempty"`
}

// RackLiveness is the data of TypeRackOffline and TypeRackOnline.
type RackLiveness struct {
	RackID        string     `json:"rack_id"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	Reason        string     `json:"reason,omitempty"`
}

// Token event types. The secret never appears in an event.
const (
	TypeTokenCreated = "rackplane.region.token_created.v1"
	TypeTokenRevoked = "rackplane.region.token_revoked.v1"
)

// TokenChanged is the data of TypeTokenCreated and TypeTokenRevoked.
type TokenChanged struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Actor   string `json:"actor"`
}
