package events

import (
	"fmt"
	"strings"
)

// RackInboxPrefix is the inbox prefix of rack rackID's NATS connection.
// Replies to the rack's own requests (region rpc, JetStream acks and pulls)
// arrive under it, so its permissions can let it read its own replies
// without letting it read every client's.
func RackInboxPrefix(rackID string) string {
	return "_INBOX.rackplane.rack." + rackID
}

// Permissions are the NATS subjects a client may publish and subscribe to.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// RackPermissions is everything rack rackID needs and nothing more: it
// publishes only its own events and heartbeats, asks the region only under
// its own id, and listens only on its own subjects and inbox. Of JetStream
// it may read the streams' state and its own consumers of the region
// stream, which the region creates for it (MethodFollow) on its own
// subjects: it cannot create or delete a consumer or a stream, or read
// another rack's boot decisions. Replies to the requests it answers go out
// under allow_responses, so it needs no publish rights on other clients'
// inboxes. Another rack's rpc, events or replies are out of its reach, and
// it cannot forge region events.
func RackPermissions(rackID string) Permissions {
	own := "rackplane.rack." + rackID + ".>"
	js := "$JS.API."
	p := Permissions{
		Publish: []string{
			own,
			"rackplane.region.rpc." + rackID + ".>",
			js + "STREAM.INFO." + RegionStream,
			js + "STREAM.INFO." + RackStream,
		},
		Subscribe: []string{
			own,
			RackInboxPrefix(rackID) + ".>",
		},
	}
	for _, purpose := range []string{FollowBoot, FollowSubnets} {
		c := RegionStream + "." + RackConsumerName(rackID, purpose)
		p.Publish = append(p.Publish, js+"CONSUMER.INFO."+c, js+"CONSUMER.MSG.NEXT."+c)
	}
	return p
}

// NATSConfig renders p as a permissions block of a NATS server
// configuration, for a user entry of its authorization section.
func (p Permissions) NATSConfig() string {
	var b strings.Builder
	b.WriteString("permissions: {\n")
	list := func(name string, subjects []string) {
		fmt.Fprintf(&b, "  %s: {\n    allow: [\n", name)
		for _, s := range subjects {
			fmt.Fprintf(&b, "      %q\n", s)
		}
		b.WriteString("    ]\n  }\n")
	}
	list("publish", p.Publish)
	list("subscribe", p.Subscribe)
	b.WriteString("  allow_responses: true\n}\n")
	return b.String()
}
