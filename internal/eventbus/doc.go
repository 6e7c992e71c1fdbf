// Package eventbus carries events over NATS JetStream: the streams the
// region creates (EnsureStreams), the NATS message of an event (Message),
// and the Publisher that racks and tests use to send events without ever
// blocking. It is the client runtime of the wire contract; the contract
// itself (envelope, subjects, stream names, schemas) is package events,
// which imports no NATS or Prometheus code so that anything may depend
// on it.
package eventbus
