// Package machine is the machine lifecycle: the one place that decides
// whether a machine may move from one status to another, and which events
// say that it did.
//
// Decide is pure: given a machine as the region knows it and a command
// (deploy, release, an installer's report, a timeout, ...) it returns the
// events that carry the command out, or a *Refusal naming the status and
// what to do instead. It reads no database and no clock of its own, so
// every transition, allowed and refused, is a table test.
//
// The transitions (the table "from" in decide.go is the authority):
//
//	new, ready, failed         deploy        → deploying
//	deploying                  installer ok  → deployed; failure or timeout → failed
//	deploying, deployed,
//	releasing, erasing,
//	failed, rescue             release       → ready (releasing while the
//	                                           region powers it off)
//	                           release erase → erasing → ready | failed
//	commissioning, deploying,
//	releasing, erasing         mark-failed   → failed
//	any but broken, erasing    mark-broken   → broken (boots from disk)
//	broken                     mark-fixed    → deployed if it was, else ready
//	new, ready, failed, broken commission    → commissioning → ready | failed
//	deployed, failed, broken   rescue        → rescue → exit-rescue → as before
//
// Service wraps Decide for the region's callers (the API, the rack rpc, the
// deployment watch, the log follower): it reads the machine and what the
// command needs (images, preseeds, boot decisions) through Store, decides,
// and appends the events at the version it read, deciding again on a fresh
// read when someone changed the machine meanwhile. Nothing else in the
// region emits a machine transition.
package machine
