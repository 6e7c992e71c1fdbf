// Package rack assembles the rack controller (rackd): its stable identity,
// its presence on NATS (registration on every connect, heartbeats, the info
// rpc), the event publisher that buffers while NATS is away, and the rack's
// HTTP server, bounded by internal/httpserver (-http-* flags): anyone on
// the boot network reaches it. The boot, image and storage services hang
// off it.
//
// Installs finish while the region is away: the HTTP server serves a
// deploying machine's preseed from the rack's sealed cache when the region
// does not answer (package preseedcache), and keeps installers' reports the
// region cannot take in a durable queue delivered later (package
// reportqueue).
package rack
