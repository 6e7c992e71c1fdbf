// Package simrack runs lightweight virtual racks for load tests of the
// region: each is a NATS connection of its own that speaks the wire
// contract (docs/wire.md) as rackd does, without TFTP, HTTP, DHCP sockets
// or an image store behind it. A virtual rack publishes rack_registered
// and capabilities_reported on connecting, heartbeats on its heartbeat
// subject, follows its boot decisions and subnets through the consumers
// the region keeps for it, answers the rack rpc methods the region may
// ask (info and capabilities; the rest are unavailable), and turns the
// boots it is told of into the events a rack's PXE boot produces: one
// boot_handoff and one boot_transfer per file the firmware fetches
// (iPXE binary and config over TFTP, kernel and initrd over HTTP) within
// the rack's rate of boot events, one boot_requests_summarized per
// interval for the rest, and one dhcp_leases_changed per interval for
// the leases given. Events go out through an eventbus.Publisher, as a
// rack's do (without its journal: nothing here outlives the process).
//
// It exists for the region's scale benchmark (region BenchmarkScale) and
// is not a rack: nothing boots from it.
package simrack
