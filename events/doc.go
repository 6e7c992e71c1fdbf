// Package events is the wire contract between region and racks: the
// CloudEvents envelope every event travels in and the data of each event
// type, the NATS subject scheme and rpc method names, the JetStream stream
// names and the event-store stream names, the bodies of the storage rpc,
// the canonical form of a MAC address, and validation of events against
// the JSON Schema files in package schema. A rack written in another
// language needs only those schema files and the subject scheme documented
// here and in docs/wire.md.
//
// The package imports no NATS client and no metrics library, so that both
// sides, and any tool, can depend on it without pulling in a runtime:
// publishing and stream setup are in internal/eventbus. The test at the
// module root (TestLayers) keeps it so, and keeps regiond free of rack
// code and rackd free of region code.
package events
