package events

import "time"

// Event types of racks' NATS credentials and of join tokens (the region's
// NATS auth callout, region/natsauth). A join token's secret never appears
// in an event; a rack's nkey is a public key and does.
const (
	TypeRackJoined       = "rackplane.region.rack_joined.v1"
	TypeRackRevoked      = "rackplane.region.rack_revoked.v1"
	TypeJoinTokenCreated = "rackplane.region.join_token_created.v1"
	TypeJoinTokenRevoked = "rackplane.region.join_token_revoked.v1"
)

// RackCredential is the data of TypeRackJoined and TypeRackRevoked, on the
// rack's stream: the rack, the nkey (public key) it connects to NATS with,
// and the join token that admitted it.
type RackCredential struct {
	RackID      string `json:"rack_id"`
	NKey        string `json:"nkey"`
	JoinTokenID string `json:"join_token_id,omitempty"`
}

// TypeRackRetired is an operator's (or rackplane dev's) retirement of a
// rack, on its stream: the rack leaves the racks the region lists, watches
// and offers images of, for good. Its NATS credential is revoked in the
// same transaction (rack_revoked, when it had one). The region refuses it
// while the rack is online or while machines, subnets or volumes depend on
// it, so nothing the rack serves is orphaned by it.
const TypeRackRetired = "rackplane.region.rack_retired.v1"

// RackRetired is the data of TypeRackRetired: the rack, its name when it
// was retired (a name may be taken again by another rack), and why, when
// the one retiring it said.
type RackRetired struct {
	RackID string `json:"rack_id"`
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

// JoinTokenChanged is the data of TypeJoinTokenCreated and
// TypeJoinTokenRevoked.
type JoinTokenChanged struct {
	JoinTokenID string    `json:"join_token_id"`
	ExpiresAt   time.Time `json:"expires_at"`
}
