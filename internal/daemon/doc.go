// Package daemon is what regiond, rackd and `rackplane dev` share to start
// a component, so that the development system is wired exactly as the
// production binaries are and the two cannot drift:
//
//   - RegionConfig and RackConfig put a component's own settings beside
//     how the binary reaches NATS (and PostgreSQL) and how it logs, each
//     part with its defaults, flags and checks where it is owned; one
//     Validate names every bad setting at once.
//   - NewRegion and NewRack dial NATS the one way each component needs
//     (a rack's reply inbox carries its id, so NATS permissions can confine
//     it) and build the component on the connection.
//
// Only main packages use it: it dials, which libraries never do.
package daemon
