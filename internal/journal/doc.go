// Package journal is a rack's durable outbox: an append-only log of
// records in segment files, written in fsync'd groups, read back in order
// and deleted once acknowledged. The event publisher (internal/eventbus)
// puts every event a rack emits here before sending it to JetStream, so an
// event survives a NATS outage, a stop, a kill -9 or a power loss.
//
// It is its own package, not part of eventbus, because it knows nothing of
// events or NATS: it stores opaque records, which keeps its file format
// small enough to fuzz and its throughput measurable on its own.
//
// # Format
//
// A journal is a directory of segment files named <first sequence>.seg
// (20 decimal digits) and a file "acked" holding the sequence of the
// oldest record not yet acknowledged. A segment starts with the 8-byte
// magic "RPJRNL01" and holds records, each:
//
//	length  uint32 little-endian, of time+data (at most MaxRecord+8)
//	crc     uint32 little-endian, CRC-32C of length, time and data
//	time    int64 little-endian, Unix nanoseconds of the append
//	data    length-8 bytes
//
// # Durability
//
// Append writes a group of records and fsyncs the segment (and, for a new
// segment, the directory) before it returns: the records of a completed
// Append survive a kill -9 and a power loss. A crash during an Append may
// leave part of that group on disk; Open detects the torn record by its
// length or CRC, counts and logs it, and truncates the segment there,
// keeping every record before it. So what a crash can lose is exactly the
// records of the groups whose Append had not returned. (The publisher
// above adds one more window: the events accepted since its last group
// commit, which its documentation states.)
//
// The acknowledgement mark is written without fsync: after a crash it may
// be behind, and records acknowledged just before are read again and sent
// a second time. Consumers drop them by id (JetStream's Nats-Msg-Id window,
// then the region's unique event id), so delivery is at least once from
// the journal and exactly once into the region's log.
//
// # Bounds
//
// MaxBytes bounds the segment files on disk; an Append that would go past
// it stores only the records that fit and says how many, and the caller
// counts the others as dropped (AppendBeyondCap takes one record past the
// cap, for the count of those at stop). Space comes back when every record of a
// segment is acknowledged (the segment is deleted) or when all records
// are (the active segment is deleted too).
package journal
