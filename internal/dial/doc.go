// Package dial opens the connections the binaries hand to Rackplane's
// components, with the retry behaviour each needs, and holds the settings
// that say how (NATSConfig, PostgresConfig), with their flags and checks.
// Only main packages, and internal/daemon which they share, use it:
// libraries are given connections, they never dial.
package dial
