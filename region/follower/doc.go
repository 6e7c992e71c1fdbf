// Package follower reacts to events in the log with events of the region's
// own: a machine is discovered when an unknown MAC PXE-boots from a rack
// (a boot_handoff event), and the default preseeds a rack ships in its
// capability snapshot become preseed versions whose origin is that rack.
//
// It reads the log by cursor, so it sees every event once in a stable
// order; it saves its cursor after handling, so after a crash it sees some
// events again, and every reaction is idempotent: each is appended with an
// expected stream version, and one that was already made is a conflict
// that is ignored. Several region instances may run it at once.
package follower
