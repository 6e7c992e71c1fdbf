package events

import "strings"

// The subject scheme confines each rack to its own subjects: rack X may
// publish only rackplane.rack.X.> and rackplane.region.rpc.>, so the region
// can trust the rack id in a subject (and checks it against the source).
const (
	Prefix = "rackplane"

	// RackEventsWildcard matches every rack's events.
	RackEventsWildcard = "rackplane.rack.*.event.>"
	// RegionEventsWildcard matches every region event.
	RegionEventsWildcard = "rackplane.region.event.>"
	// HeartbeatWildcard matches every rack's heartbeat.
	HeartbeatWildcard = "rackplane.rack.*.heartbeat"
)

// RackEventSubject is where rack rackID publishes events of type typ.
func RackEventSubject(rackID, typ string) string {
	return "rackplane.rack." + rackID + ".event." + Name(typ)
}

// RegionEventSubject is where the region publishes events of type typ.
func RegionEventSubject(typ string) string {
	return "rackplane.region.event." + Name(typ)
}

// HeartbeatSubject is where rack rackID publishes heartbeats. Heartbeats are
// plain NATS messages, not stream events: they are not state changes, and
// the region turns their absence into rack_offline events.
func HeartbeatSubject(rackID string) string {
	return "rackplane.rack." + rackID + ".heartbeat"
}

// RackRPCSubject addresses method on one rack.
func RackRPCSubject(rackID, method string) string {
	return "rackplane.rack." + rackID + ".rpc." + method
}

// RacksRPCSubject addresses method on every rack at once (scatter-gather).
func RacksRPCSubject(method string) string {
	return "rackplane.racks.rpc." + method
}

// RegionRPCSubject addresses method on the region; region instances answer
// it in queue group RegionQueue so exactly one of them does.
func RegionRPCSubject(method string) string {
	return "rackplane.region.rpc." + method
}

// RegionQueue is the queue group region instances share for rpc.
const RegionQueue = "rackplane-region"

// RackIDFromSubject returns the rack id token of a rackplane.rack.<id>.…
// subject, or "".
func RackIDFromSubject(subject string) string {
	parts := strings.SplitN(subject, ".", 4)
	if len(parts) < 4 || parts[0] != Prefix || parts[1] != "rack" {
		return ""
	}
	return parts[2]
}
