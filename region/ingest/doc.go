// Package ingest moves rack events from JetStream into the region's event
// store. A durable pull consumer fetches batches; each message is decoded
// and validated against its schema and checked to come from the rack whose
// subject it was published on; the good ones are appended in one
// transaction, and only after that commit are they acknowledged, so a region
// killed at any point loses nothing and, thanks to idempotent appends by
// event id, duplicates nothing. A message that fails validation is
// terminated on the stream, counted and recorded with its reason, and the
// consumer goes on with the next.
package ingest
