// Package follower reacts to events in the log with events of the region's
// own: a machine is discovered when an unknown MAC PXE-boots from a rack
// (a boot_handoff event), and the default preseeds a rack ships in its
// capability snapshot become preseed versions whose origin is that rack.
//
// Boot requests are unauthenticated, so discovery is capped
// (Config.Discovery, regiond's -discovery-* flags): so many machines per
// rack in any minute, and so many discovered machines still new. The
// count and the machine's append are one transaction, serialised with
// every other discovery by an advisory lock, so the caps hold with
// several region instances. A boot refused makes no machine (the MAC is
// discovered at a later boot, under the caps); the refusals of each rack
// are counted (rackplane_region_discoveries_refused_total) and summed up
// in one discovery_refused event per rack and SummaryInterval.
//
// It reads the log by cursor, so it sees every event once in a stable
// order; it saves its cursor after handling, so after a crash it sees some
// events again, and every reaction is idempotent: each is appended with an
// expected stream version, and one that was already made is a conflict
// that is ignored. Several region instances may run it at once.
package follower
