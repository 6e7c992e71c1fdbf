// Package e2e holds end-to-end tests: they build the real binaries, run
// them on free ports against a real PostgreSQL and NATS, and check what an
// operator would check with curl and the CLI.
package e2e
