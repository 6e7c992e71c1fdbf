// Package eventbus carries events over NATS JetStream: the streams the
// region creates (EnsureStreams), the NATS message of an event (Message),
// and the Publisher that racks and tests use to send events without ever
// blocking. It is the client runtime of the wire contract; the contract
// itself (envelope, subjects, stream names, schemas) is package events,
// which imports no NATS or Prometheus code so that anything may depend
// on it.
//
// # Durability of a journalled Publisher
//
// With PublisherConfig.Journal set (as rackd sets it), Publish puts the
// event in memory and returns; a writer commits everything queued to the
// journal (internal/journal) as one group, one write and one fsync, and
// starts the next group as soon as that fsync returns. A sender reads the
// journal in order, publishes each event with its id as Nats-Msg-Id, and
// removes it from the journal only once JetStream acknowledged it.
//
// So an event is durable once its group's fsync returned; before that it
// is counted by AwaitingJournal (gauge rackplane_events_awaiting_journal).
// A kill -9 or a power loss loses exactly the events accepted by Publish
// whose group had not been fsync'd: those queued since the last group
// commit began, a window of one write+fsync (a few milliseconds on a
// local disk) under load and none at all when the rack is idle. A clean
// stop (the end of Run's context) commits what is queued before Run
// returns, so it loses nothing; what JetStream has not acknowledged by
// then stays in the journal and is sent on the next start.
//
// Events are delivered at least once from the journal (a crash between
// JetStream's acknowledgement and the journal's may send an event again)
// and exactly once into the region: JetStream drops a repeat within
// DuplicateWindow, the region's unique event id beyond it.
//
// # Dropped events
//
// An event is dropped only before it was handed to NATS or written to the
// journal: when the memory buffer (Buffer) is full, or when the journal is
// at its size cap. Every drop is counted, and the count goes out in an
// events_dropped event (journalled, once there is room, ahead of newer
// events), so for every event published exactly one of these holds: it
// arrives, or it is counted in exactly one events_dropped event. A drop
// count still unreported at stop (the journal full) is journalled past the
// cap, by that one record, so it outlives the process; only if that write
// fails is it merely logged.
package eventbus
