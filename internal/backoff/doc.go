// Package backoff is how Rackplane's loops wait before trying again when
// NATS, JetStream or PostgreSQL is away: a wait that doubles from an
// initial value up to a cap, with jitter so that many racks and region
// instances that lost the same server do not all come back at the same
// instant, and that ends early when the caller's context does.
//
// Every retry loop uses it, so that a change of policy (a longer cap, more
// jitter) is made in one place and a loop cannot forget the context.
package backoff
