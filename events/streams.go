package events

import (
	"encoding/json"
	"errors"
)

// JetStream stream names. The region owns the streams and creates them at
// start (internal/eventbus.EnsureStreams); a rack that starts first keeps
// its events buffered until they exist.
const (
	RackStream   = "RACKPLANE_RACK_EVENTS"
	RegionStream = "RACKPLANE_REGION_EVENTS"
)

// Event-store stream (aggregate) names: an event's subject is one of them,
// "<kind>/<id>". The prefixes are exported for code that must match or
// take apart a name (a SQL join, a projection); everything else builds
// names with the functions below.
const (
	RackStreamPrefix    = "rack/"
	MachineStreamPrefix = "machine/"
	VolumeStreamPrefix  = "volume/"
	ImageStreamPrefix   = "image/"
	PreseedStreamPrefix = "preseed/"
	TokenStreamPrefix   = "token/"
	// JoinTokenStreamPrefix names the streams of join tokens (racks'
	// admission to NATS; see region/natsauth).
	JoinTokenStreamPrefix = "join-token/"
)

// RackStreamName is the event-store stream of a rack.
func RackStreamName(rackID string) string { return RackStreamPrefix + rackID }

// MachineStreamName is the event-store stream of a machine.
func MachineStreamName(id string) string { return MachineStreamPrefix + id }

// VolumeStreamName is the event-store stream of a volume.
func VolumeStreamName(volumeID string) string { return VolumeStreamPrefix + volumeID }

// ImageStreamName is the event-store stream of one image version (or of a
// rack's image store as a whole, with name "store") on one rack. The rack id
// is part of it because the same version on two racks is two copies with
// lives of their own.
func ImageStreamName(rackID, name string) string { return ImageStreamPrefix + rackID + "/" + name }

// PreseedStreamName is the event-store stream of a named preseed.
func PreseedStreamName(name string) string { return PreseedStreamPrefix + name }

// TokenStreamName is the event-store stream of an API token.
func TokenStreamName(id string) string { return TokenStreamPrefix + id }

// JoinTokenStreamName is the event-store stream of a join token.
func JoinTokenStreamName(id string) string { return JoinTokenStreamPrefix + id }

// SubjectFor returns the subject an event is published on, derived from its
// source and type.
func SubjectFor(e Event) (string, error) {
	if e.Source == RegionSource {
		if rack := RackOfRegionEvent(e); rack != "" {
			return RegionRackEventSubject(rack, e.Type), nil
		}
		return RegionEventSubject(e.Type), nil
	}
	if id := RackIDFromSource(e.Source); id != "" {
		return RackEventSubject(id, e.Type), nil
	}
	return "", errors.New("event source is neither region nor rack")
}

// forRack are the region event types meant for one rack, named by their
// data's rack_id: they go on that rack's subject alone, since they hold
// what only it may know (its machines' boot decisions, its subnets).
var forRack = map[string]bool{
	TypeBootDecisionSet: true, TypeBootDecisionCleared: true,
	TypeSubnetSet: true, TypeSubnetDeleted: true,
}

// RackOfRegionEvent returns the rack a region event is meant for, or ""
// when it is for the region alone.
func RackOfRegionEvent(e Event) string {
	if !forRack[e.Type] {
		return ""
	}
	var d struct {
		RackID string `json:"rack_id"`
	}
	if json.Unmarshal(e.Data, &d) != nil || !isToken(d.RackID) {
		return ""
	}
	return d.RackID
}

// isToken reports whether s can stand as one token of a NATS subject.
func isToken(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == '.' || c == '*' || c == '>' || c > '~' {
			return false
		}
	}
	return true
}
