package events

import "strings"

// The subject scheme confines each rack to its own subjects: rack X may
// publish only rackplane.rack.X.> and rackplane.region.rpc.X.>, and read
// only rackplane.rack.X.> and the region events meant for it, so the region
// knows who is talking by the subject alone (NATS permissions, which the
// region grants by the rack's credentials, enforce it), never by a field
// of the payload.
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

// RegionRPCSubject is where rack rackID asks the region method; region
// instances answer it in queue group RegionQueue so exactly one of them
// does. The rack id in the subject is who asks: a rack may publish only
// under its own, so the region answers only about that rack's business.
func RegionRPCSubject(rackID, method string) string {
	return "rackplane.region.rpc." + rackID + "." + method
}

// RegionRPCWildcard matches method asked by any rack.
func RegionRPCWildcard(method string) string {
	return "rackplane.region.rpc.*." + method
}

// RackIDFromRegionRPCSubject returns the asking rack of a
// RegionRPCSubject, or "" when subject is not one.
func RackIDFromRegionRPCSubject(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0] != Prefix || parts[1] != "region" || parts[2] != "rpc" {
		return ""
	}
	return parts[3]
}

// RegionRackEventSubject is where the region publishes an event of type
// typ meant for rack rackID alone (its boot decisions, its subnets). A
// rack can read only its own: the region creates the consumers racks read
// them with (RackConsumerName).
func RegionRackEventSubject(rackID, typ string) string {
	return "rackplane.region.rack." + rackID + ".event." + Name(typ)
}

// RegionRackEventsWildcard matches region events meant for any rack.
const RegionRackEventsWildcard = "rackplane.region.rack.*.event.>"

// RackConsumerName is the region stream consumer through which rack rackID
// reads the region events it follows for purpose (FollowBoot,
// FollowSubnets). The region creates and positions it (MethodFollow):
// racks may not create or delete consumers, only read their own.
func RackConsumerName(rackID, purpose string) string {
	return "rack_" + rackID + "_" + purpose
}

// RegionQueue is the queue group region instances share for rpc.
const RegionQueue = "rackplane-region"

// RackIDFromSubject returns the rack id token of a rackplane.rack.<id>.…
// subject, or "".
func RackIDFromSubject(subject string) string {
	// Cut, not Split: this runs for every rack event ingested, and
	// allocates nothing.
	rest, ok := strings.CutPrefix(subject, Prefix+".rack.")
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, ".")
	if !ok {
		return ""
	}
	return id
}
