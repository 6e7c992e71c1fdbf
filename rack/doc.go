// Package rack assembles the rack controller (rackd): its stable identity,
// its presence on NATS (registration on every connect, heartbeats, the info
// rpc), the event publisher that buffers while NATS is away, and the rack's
// HTTP server. The boot, image and storage services hang off it.
package rack
