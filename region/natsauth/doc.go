// Package natsauth is the region's NATS auth callout: it decides every
// connection a client other than the region makes to the NATS server, and
// gives each rack credentials for its own subjects alone.
//
// The server (nats-server 2.10 or later, configured as
// internal/natsserver.Auth renders it) sends each connect request to
// $SYS.REQ.USER.AUTH, where the region answers in a queue group on its own
// connection (the region's users bypass the callout). A rack connects with
// its id as user name, the signature of the server's nonce by its nkey
// (proof it holds the private key; the nkey is made in its data directory
// on first start) and, until it is known, a join token. The region
// admits it when its id is bound to that nkey and not revoked, or, for an
// id not bound yet, when the join token is valid: the id is then bound to
// the nkey (rack_joined). Every other request is refused with a reason,
// counted in rackplane_region_nats_auth_refused_total and logged (never
// with a secret). An admitted rack gets a user JWT, signed by the issuer
// account key the server trusts, that places it in the racks' account
// with exactly events.RackPermissions of its id.
//
// Why a callout rather than account and user JWTs pushed to the server:
// every decision about a rack stays in the region and PostgreSQL, which
// own the rest of its state; revoking takes effect without distributing
// account JWTs; and a rack needs no credentials file handed to it, only a
// join token once.
//
// Revoking a rack marks its binding revoked, so that the callout refuses
// it from then on, and disconnects the connections it has: the region
// asks every server for the rack's connections ($SYS.REQ.SERVER.PING.CONNZ
// as a user of the system account) and kicks each
// ($SYS.REQ.SERVER.<id>.KICK). That takes effect at once. The other way,
// short-lived user JWTs re-checked when they expire, would leave a revoked
// rack connected until then and make every rack reconnect (losing replies
// in flight) every period. A connection the callout admitted just before
// the revocation committed may register after the first sweep, so the
// rack is swept once more after the server's authentication timeout.
package natsauth
