// Package offload lets a TFTP front-end in another process serve boot
// files through the rack's hand-off: over a Unix socket speaking the MAAS
// TFTP offload protocol (byte-compatible with MAAS's tftp_offload.py), and
// over NATS request/reply on the rack's "handoff" rpc subject.
//
// Either way the front-end gets a path to serve. A static file is named
// where it lies; dynamic content (a config rendered for the machine) is
// written to an ephemeral file in the hand-off store, which is deleted
// once the front-end reports the transfer done, when the front-end deletes
// it itself (as the MAAS protocol asks for "EPH" files), when its time to
// live runs out, or by the sweep at start. Every deletion is an event with
// its reason.
//
// A front-end over NATS reports its transfer with a boot_transfer event on
// the rack's event subject, where the rack's own boot transfers go too.
// The rack listens there only while a file it handed out over NATS waits
// for its report, and drops events naming no such file before decoding
// them: a busy rack does not receive its own telemetry back.
package offload
