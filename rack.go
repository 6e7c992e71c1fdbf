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
}
