package eventbus

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/journal"
)

// runJournalled runs the two halves of a journalled publisher: the writer
// commits queued events to the journal in groups, the sender sends what
// the journal holds and acknowledges what JetStream took. When ctx ends
// the writer commits what is still queued, so a clean stop loses nothing.
func (p *Publisher) runJournalled(ctx context.Context) error {
	sent := make(chan struct{})
	go func() { defer close(sent); p.sendJournal(ctx) }()
	p.writeJournal(ctx)
	<-sent
	return nil
}

// writeJournal commits groups: everything queued while the previous
// group's fsync ran goes in the next, so a burst costs a few fsyncs, not
// one per event.
func (p *Publisher) writeJournal(ctx context.Context) {
	backoff := newBackoff()
	for {
		stopping := ctx.Err() != nil
		ok := p.commitGroup()
		p.mu.Lock()
		queued := len(p.queue)
		p.mu.Unlock()
		if stopping && (queued == 0 || !ok) {
			// What is queued is in the journal, or the journal fails;
			// either way nothing goes without a word.
			if queued > 0 {
				p.log.Error("events not written to the journal at stop: lost", "events", queued, "dir", p.cfg.Journal.Dir())
				p.mu.Lock()
				for _, e := range p.queue {
					p.countDrop(e.Type)
				}
				p.queue = nil
				p.mu.Unlock()
			}
			p.journalReportAtStop()
			return
		}
		if !ok {
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		if queued > 0 {
			continue
		}
		// Nothing queued; a drop report that did not fit waits for room.
		select {
		case <-ctx.Done():
		case <-p.wake:
		case <-p.acked:
		}
	}
}

// journalReportAtStop journals the report of drops that found no room:
// past the cap if need be, so that the count outlives the process.
func (p *Publisher) journalReportAtStop() {
	p.mu.Lock()
	report, count, types, ok := p.dropReportLocked()
	p.mu.Unlock()
	if !ok {
		return
	}
	b, err := events.Encode(report)
	if err == nil {
		err = p.cfg.Journal.AppendBeyondCap(b)
	}
	if err != nil {
		p.log.Error("events dropped since the last events_dropped report, and the report could not be journalled",
			"dropped_unreported", count, "err", err, "dir", p.cfg.Journal.Dir())
		return
	}
	p.mu.Lock()
	p.reportedLocked(count, types)
	p.mu.Unlock()
}

// commitGroup writes the queued events, and a report of drops before them,
// to the journal. What does not fit under the journal's cap is dropped and
// counted; the report of those goes in a later group, once there is room.
// It returns false when the journal failed (the events go back in front).
func (p *Publisher) commitGroup() bool {
	p.mu.Lock()
	report, count, types, hasReport := p.dropReportLocked()
	n := min(len(p.queue), maxGroup)
	group := append([]events.Event(nil), p.queue[:n]...)
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	p.writing = n
	p.mu.Unlock()
	if n == 0 && !hasReport {
		return true
	}

	records := make([][]byte, 0, n+1)
	if hasReport {
		b, err := events.Encode(report)
		if err == nil {
			records = append(records, b)
		} else {
			hasReport = false
		}
	}
	kept := group[:0]
	var unfit []events.Event
	for _, e := range group {
		b, err := events.Encode(e)
		if err == nil && len(b) > journal.MaxRecord {
			err = errTooLarge
		}
		if err != nil {
			p.log.Error("dropping event that cannot be journalled", "event_id", e.ID, "type", e.Type, "err", err)
			unfit = append(unfit, e)
			continue
		}
		kept = append(kept, e)
		records = append(records, b)
	}
	stored, err := p.cfg.Journal.Append(records)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.writing = 0
	for _, e := range unfit {
		p.countDrop(e.Type)
	}
	if err != nil {
		p.failures.Inc()
		p.queue = append(kept, p.queue...)
		p.overflowLocked()
		p.log.Error("writing events to the journal failed, will retry", "err", err, "dir", p.cfg.Journal.Dir(), "events", len(kept))
		return false
	}
	if hasReport && stored > 0 {
		p.reportedLocked(count, types)
		stored--
	}
	full := kept[stored:]
	for _, e := range full {
		p.countDrop(e.Type)
	}
	if len(full) > 0 {
		p.logFull(len(full))
	}
	p.checkIdleLocked()
	notify(p.journalled)
	return true
}

// errTooLarge is an event over the journal's record size.
var errTooLarge = errors.New("event larger than a journal record may be")

// logFull says that the journal is full, at most every failLogEvery;
// p.mu is held.
func (p *Publisher) logFull(n int) {
	now := p.cfg.Now()
	if now.Sub(p.lastFullLog) < failLogEvery {
		return
	}
	p.lastFullLog = now
	p.log.Warn("event journal full: dropping events, counted and reported once there is room",
		"dropped", n, "dropped_unreported", p.dropped, "journal_bytes", p.cfg.Journal.Bytes(), "dir", p.cfg.Journal.Dir())
}

// sendJournal sends the journal's records in order, Batch at a time, and
// acknowledges in the journal the longest run JetStream acknowledged; the
// rest go again (JetStream drops the repeats by Nats-Msg-Id).
func (p *Publisher) sendJournal(ctx context.Context) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		records, err := p.cfg.Journal.Read(p.cfg.Batch)
		if err != nil {
			p.logFailure(err)
			if !backoff.wait(ctx) {
				return
			}
			continue
		}
		if len(records) == 0 {
			select {
			case <-ctx.Done():
			case <-p.journalled:
			}
			continue
		}
		msgs := make([]*nats.Msg, len(records))
		bad := make([]error, len(records))
		for i, r := range records {
			msgs[i], bad[i] = journalMessage(r)
		}
		acked := p.publishAll(ctx, msgs)
		n := 0
		for n < len(acked) && (acked[n] || msgs[n] == nil) {
			n++
		}
		// A record that is not an event is dropped loudly and counted, once,
		// as it leaves the journal: the journal's CRC makes it the mark of a
		// bug, not of a crash.
		for i := range n {
			if bad[i] != nil {
				p.log.Error("dropping a journal record that is not an event", "seq", records[i].Seq, "err", bad[i])
				p.mu.Lock()
				p.countDrop("unknown")
				p.mu.Unlock()
			}
		}
		if n > 0 {
			if err := p.cfg.Journal.Ack(records[n-1]); err != nil {
				p.log.Error("acknowledging journal records failed", "err", err, "dir", p.cfg.Journal.Dir())
			}
			notify(p.acked)
		}
		p.mu.Lock()
		p.checkIdleLocked()
		p.mu.Unlock()
		if n == len(records) {
			backoff.reset()
			continue
		}
		p.failures.Inc()
		if !backoff.wait(ctx) {
			return
		}
	}
}

// journalMessage is the NATS message of a journal record: the event as
// it was encoded, with its subject and id.
func journalMessage(r journal.Record) (*nats.Msg, error) {
	var e events.Event
	if err := json.Unmarshal(r.Data, &e); err != nil {
		return nil, err
	}
	subj, err := events.SubjectFor(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subj)
	m.Data = r.Data
	m.Header.Set(jetstream.MsgIDHeader, e.ID)
	return m, nil
}
