// Package handoff decides what a boot request gets, whichever front-end
// received it (TFTP, HTTP, an offload front-end over a Unix socket or
// NATS): a config rendered for the requesting machine, a file of an
// explicit image or boot loader version, a file of the fallback root, or a
// refusal. Decisions and transfer outcomes are events.
//
// Boot requests are not authenticated (a TFTP request may come from a
// forged address), so they must not become one permanent event each: a
// request is reported one by one (boot_handoff or boot_request_rejected,
// then boot_transfer) only while its source (an IPv4 address, an IPv6
// /64) and all sources together are within their token buckets
// (TelemetryLimits, rackd's -boot-events-* flags). The others are counted
// — by protocol, outcome, limit and source — and go out as one
// boot_requests_summarized event per interval, and in
// rackplane_boot_events_summarized_total. Memory is bounded: at most
// MaxSources buckets, and sources whose bucket has filled up again are
// forgotten first; while the table is full of busy sources, new ones
// share one bucket. Whatever the traffic, a rack makes at most
// TotalBurst + TotalRate × t events of requests in t, plus one summary
// per interval.
//
// Names come from the network and are hostile until proven otherwise: the
// resolver normalises them and never opens anything outside its roots (no
// "..", no NUL, no over-long names, and files are opened through os.Root,
// which refuses symlinks that lead out of the root).
package handoff
