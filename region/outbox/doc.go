// Package outbox relays region events from the Postgres outbox to
// JetStream. Emitting code writes events and outbox rows in the state
// change's own transaction (postgres.DB.Emit); the relay publishes them
// afterwards with the event id as Nats-Msg-Id and removes them once
// JetStream acknowledged them. Delivery is at least once: a crash between
// publish and removal republishes, and JetStream's duplicate window and the
// consumers' dedupe by id absorb it.
package outbox
