// Package e2e holds end-to-end tests: they build the real binaries, run
// them on free ports against a real PostgreSQL and NATS, and check what an
// operator would check with curl, the CLI and the web UI (in headless
// Chromium, which the UI test needs installed). They skip under -short.
package e2e
