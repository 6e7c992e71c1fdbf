// Package rackrpc answers what racks ask the region over NATS: the boot
// decision of a MAC the rack has not cached, and the rendered preseed of a
// deploying machine. Region instances answer in one queue group, so any of
// them may; every request is checked against its schema, since a rack is
// outside input like any other.
package rackrpc
