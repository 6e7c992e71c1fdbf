// Package ingest moves rack events from JetStream into the region's event
// store. A durable pull consumer fetches messages; a batch closes at its
// size cap or a few milliseconds (Config.MaxWait) after its first
// message, whichever comes first, so that batches are large under load
// and latency stays low under a trickle. Each message is decoded and
// validated against its schema and checked to come from the rack whose
// subject it was published on, while the batch before it is being
// stored; the good ones are appended in one transaction, batches one
// after the other in the order they were read (a batch that fails is
// tried again, never skipped, so each rack's events keep their order),
// and only after that commit are they acknowledged, so a region
// killed at any point loses nothing and, thanks to idempotent appends by
// event id, duplicates nothing. A message that fails validation is
// terminated on the stream, counted and recorded with its reason, and the
// consumer goes on with the next.
package ingest
