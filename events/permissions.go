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
// publishes only its own events and heartbeats and asks the region; it
// listens only on its own subjects, the broadcast rpc subjects and its
// inbox; of JetStream it may only read the region's events with an
// ephemeral consumer. Replies to the requests it answers go out under
// allow_responses, so it needs no publish rights on other clients' inboxes.
// Another rack's rpc, events or replies are out of its reach, and it
// cannot forge region events or alter a stream.
func RackPermissions(rackID string) Permissions {
	own := "rackplane.rack." + rackID + ".>"
	js := "$JS.API."
	return Permissions{
		Publish: []string{
			own,
			"rackplane.region.rpc.>",
			js + "INFO",
			js + "STREAM.INFO." + RegionStream,
			js + "STREAM.INFO." + RackStream,
			js + "CONSUMER.CREATE." + RegionStream,
			js + "CONSUMER.CREATE." + RegionStream + ".>",
			js + "CONSUMER.INFO." + RegionStream + ".>",
			js + "CONSUMER.DELETE." + RegionStream + ".>",
			js + "CONSUMER.MSG.NEXT." + RegionStream + ".>",
		},
		Subscribe: []string{
			own,
			"rackplane.racks.rpc.>",
			RackInboxPrefix(rackID) + ".>",
		},
	}
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
