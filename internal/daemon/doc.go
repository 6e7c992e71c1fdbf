// Package daemon is what regiond, rackd and `rackplane dev` share to start
// a component, so that the development system is wired exactly as the
// production binaries are and the two cannot drift. Its packages regiond
// and rackd each put a component's own settings beside how the binary
// reaches NATS (and PostgreSQL) and how it logs, each part with its
// defaults, flags and checks where it is owned; one Validate names every
// bad setting at once. Their New dials NATS the one way each component
// needs and builds the component on the connection. They are two packages
// so that regiond links no rack code and rackd no region code.
//
// Only main packages use them: they dial, which libraries never do.
package daemon
