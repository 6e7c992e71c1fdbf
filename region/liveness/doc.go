// Package liveness turns rack heartbeats into rack_offline and rack_online
// events. Heartbeats are plain NATS messages every region instance
// receives; a rack that misses Misses heartbeat intervals is declared
// offline, and one that beats again is declared online. Several region
// instances may run the monitor at once: each transition is appended with
// the rack stream's expected version, so only one of them records it.
package liveness
