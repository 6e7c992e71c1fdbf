package events

import "errors"

// JetStream stream names. The region owns the streams and creates them at
// start (internal/eventbus.EnsureStreams); a rack that starts first keeps
// its events buffered until they exist.
const (
	RackStream   = "RACKPLANE_RACK_EVENTS"
	RegionStream = "RACKPLANE_REGION_EVENTS"
)

// SubjectFor returns the subject an event is published on, derived from its
// source and type.
func SubjectFor(e Event) (string, error) {
	if e.Source == RegionSource {
		return RegionEventSubject(e.Type), nil
	}
	if id := RackIDFromSource(e.Source); id != "" {
		return RackEventSubject(id, e.Type), nil
	}
	return "", errors.New("event source is neither region nor rack")
}
