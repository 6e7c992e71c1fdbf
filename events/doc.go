// Package events is the wire contract between region and racks: the
// CloudEvents envelope every event travels in, the NATS subject scheme, the
// JetStream streams, and validation of events against the JSON Schema files
// in package schema. A rack written in another language needs only those
// schema files and the subject scheme documented here and in docs/wire.md.
package events
