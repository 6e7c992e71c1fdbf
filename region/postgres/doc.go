// Package postgres is the region's state in PostgreSQL: the event store
// (append with expected version, idempotent by event id, followed by
// cursor), the outbox of region events, the projections derived from the
// log in the same transaction as each append (and rebuilt from it into
// shadow tables beside a live region, then swapped in), and the queries
// the API answers from them.
package postgres
