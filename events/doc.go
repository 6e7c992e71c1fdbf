// Package events is the wire contract between region and racks: the
// CloudEvents envelope every event travels in, the NATS subject scheme, the
// JetStream stream names, and validation of events against the JSON Schema
// files in package schema. A rack written in another language needs only
// those schema files and the subject scheme documented here and in
// docs/wire.md.
//
// The package imports no NATS client and no metrics library, so that both
// sides, and any tool, can depend on it without pulling in a runtime:
// publishing and stream setup are in internal/eventbus.
package events
