// Package reportqueue keeps the region rpc calls a rack could not make
// because the region was away, chiefly installers' status reports, and
// makes them later, in order.
//
// An installer reports once and powers off; if its report is lost the
// machine never leaves deploying. So a report the region cannot take now
// is appended to a file in the rack's data directory and synced before the
// installer is answered (202 Accepted): once answered, it survives a crash
// or a restart of the rack. Each record carries a CRC-32C: a tail torn by a
// crash in the middle of a write is detected on open and cut off (it was
// never acknowledged, so nothing acknowledged is lost).
//
// A background loop makes the calls oldest first, with backoff while the
// region stays away. Each call the region answered is marked made in a
// small head file (HeadFile: the sequence number of the last one), so that
// making n calls costs n small writes rather than n rewrites of the queue;
// the queue file is compacted, the pending records copied without holding
// up appends, once the calls made fill more than half of it. The region's
// calls are idempotent for a repeated identical report, so a call made
// twice (a crash between the answer and the removal) is harmless. A call
// the region refuses as wrong (an error of the 4xx kind: invalid, not
// found, forbidden, conflict) is dropped with a log line and a count: it
// would be refused again forever.
//
// A failed append is cut off the file before anything else is appended;
// when even that fails the queue refuses appends (installers get 503 and
// retry) until the rack restarts, rather than acknowledging calls the next
// start would cut off with the partial record. Request bodies (an
// installer's report carries its status token) are sealed at rest with
// Config.Sealer, the rack's preseed cache key; Config.MaxPerKey bounds the
// calls one machine may have waiting.
package reportqueue
