// Package retention prunes boot telemetry from the region's event log.
//
// The log is append-only and event-sourced: every state change stays for
// good, and the projections are rebuilt from it. Boot telemetry is not a
// state change: what racks (and the region) report of unauthenticated
// boot traffic — hand-offs, transfers, refused requests, their summaries,
// DHCP activity, refused discoveries (postgres.TelemetryTypes) — feeds no
// projection, so it can go once it is old enough or one of too many.
// Racks already bound its rate (rack/handoff); retention bounds how much
// of it the log holds: at most KeepPerSource events per rack (and as many
// of the region's own), and none older than MaxAge, after each pass.
//
// A Pruner runs a pass every Interval (regiond's -telemetry-* flags).
// postgres.PruneTelemetry says why deleting such rows is safe for the
// log's followers; docs/event-log.md says it for operators.
package retention
