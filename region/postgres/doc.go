// Package postgres is the region's state in PostgreSQL: the event store
// (append with expected version, idempotent by event id, followed by
// cursor), the outbox of region events, the projections derived from the
// log in the same transaction as each append, and the queries the API
// answers from them.
package postgres
