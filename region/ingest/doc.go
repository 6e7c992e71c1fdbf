// Package ingest moves rack events from JetStream into the region's event
// store. A durable pull consumer fetches messages; each is queued in the
// lane of the rack whose subject it was published on (a rack's messages
// always in the same lane, in the order they were read). Up to
// Config.Concurrency storers each form a batch of lanes no other storer
// holds, and hold those lanes until their batch is stored: a batch closes
// at its size cap or a few milliseconds (Config.MaxWait) after its oldest
// message was read, whichever comes first, so that batches are large
// under load and latency stays low under a trickle. One storer forms a
// batch at a time and takes every lane with messages, so a trickle makes
// one transaction per MaxWait, not one per rack; under load each batch
// fills from fewer racks and the others' lanes go to the next storer, so
// batches of different racks commit at once.
//
// Each message is decoded and validated against its schema and checked to
// come from the rack whose subject it was published on; the good ones of
// a batch are appended in one transaction, and only after that commit are
// they acknowledged, so a region killed at any point loses nothing and,
// thanks to idempotent appends by event id, duplicates nothing. A batch
// that fails is tried again, never skipped, with its lanes still held, so
// no later event of its racks can overtake it: each rack's events keep
// their order, whatever the other racks' batches do. Racks' batches that
// commit at once commit their log positions out of order; the log's
// readers read only below the oldest append still in flight
// (docs/event-log.md), so none of them skips an event for that. Ingest's
// transactions do not notify the log's readers themselves (PostgreSQL
// would commit notifying transactions one at a time): the ingester sends
// the notification after their commits, one at a time and again as soon
// as it is done if any batch committed meanwhile, so a reader waiting at
// the end of the log is woken after every commit. A message
// that fails validation is terminated on the stream, counted and recorded
// with its reason, and the consumer goes on with the next.
package ingest
