package eventbus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/journal"
)

// journalled is a running publisher on a journal in dir.
type journalled struct {
	pub  *eventbus.Publisher
	j    *journal.Journal
	stop func() // ends Run and closes the journal
}

func startJournalled(t *testing.T, js jetstream.JetStream, rack, dir string, maxBytes, segBytes int64) *journalled {
	t.Helper()
	j, err := journal.Open(journal.Config{Dir: dir, MaxBytes: maxBytes, SegmentBytes: segBytes})
	if err != nil {
		t.Fatal(err)
	}
	pub := eventbus.NewPublisher(js, eventbus.PublisherConfig{
		Source: events.RackSource(rack), Subject: events.RackStreamName(rack), Journal: j,
		Batch: 64, AckTimeout: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pub.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
			j.Close()
		}
	}
	t.Cleanup(stop)
	return &journalled{pub: pub, j: j, stop: stop}
}

func rackEvent(t *testing.T, rack string, i int) events.Event {
	t.Helper()
	e, err := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
		events.RackRegistered{Name: "r", Version: fmt.Sprint(i), StartedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// streamContents reads every message of the rack stream: how many times
// each event id is there, and the sum of the events_dropped counts.
func streamContents(t *testing.T, js jetstream.JetStream) (seen map[string]int, dropped int64) {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, events.RackStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen = map[string]int{}
	v, _ := events.NewValidator()
	for got := uint64(0); got < info.State.Msgs; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			e, err := v.Decode(m.Data())
			if err != nil {
				t.Fatalf("event in the stream does not validate: %v", err)
			}
			if e.Type == events.TypeEventsDropped {
				var d events.EventsDropped
				if err := e.DecodeData(&d); err != nil {
					t.Fatal(err)
				}
				dropped += d.Count
			}
			seen[e.ID]++
		}
		if n == 0 {
			t.Fatalf("read %d of %d messages, then nothing", got, info.State.Msgs)
		}
		got += uint64(n)
	}
	return seen, dropped
}

func flush(t *testing.T, pub *eventbus.Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitJournalled waits until every accepted event is in the journal.
func waitJournalled(t *testing.T, pub *eventbus.Publisher) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); pub.AwaitingJournal() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d events still not in the journal after 30s", pub.AwaitingJournal())
		}
	}
}

// TestJournalledEventsSurviveARestart: events published while NATS is away
// stay in the journal through a stop of the publisher and go out, each
// exactly once, from a new publisher on the same journal once NATS is back.
func TestJournalledEventsSurviveARestart(t *testing.T) {
	ns, js := startStreams(t)
	rack, dir := uuid.NewString(), t.TempDir()
	p := startJournalled(t, js, rack, dir, 0, 0)
	ns.Stop()
	want := map[string]bool{}
	for i := 0; i < 1000; i++ {
		e := rackEvent(t, rack, i)
		p.pub.Publish(e)
		want[e.ID] = true
	}
	p.stop() // commits what is queued
	ns.Restart()
	p = startJournalled(t, js, rack, dir, 0, 0)
	flush(t, p.pub)
	// Flush waited for what the journal held from before, too.
	if p.j.Pending() != 0 || p.j.Bytes() != 0 {
		t.Fatalf("flushed, yet the journal holds %d records in %d bytes", p.j.Pending(), p.j.Bytes())
	}
	seen, dropped := streamContents(t, js)
	if dropped != 0 || p.pub.Dropped() != 0 {
		t.Fatalf("%d events reported dropped", dropped)
	}
	for id := range want {
		if seen[id] != 1 {
			t.Fatalf("event %s is in the stream %d times, want once", id, seen[id])
		}
	}
}

// TestJournalCapDropsExactly: with NATS away and more events than the
// journal holds, the publisher drops the ones that do not fit, and once
// NATS is back the stream has every other one exactly once plus
// events_dropped events whose counts add up to exactly the rest, also
// when the publisher stops and starts again with the journal full.
func TestJournalCapDropsExactly(t *testing.T) {
	tests := []struct {
		name    string
		restart bool
	}{
		{"running", false},
		{"stopped while full", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, js := startStreams(t)
			rack, dir := uuid.NewString(), t.TempDir()
			// The smallest journal there is: 1.2 MiB, room for ~3,000 events.
			const maxBytes, segBytes = 4 * 300 << 10, 300 << 10
			p := startJournalled(t, js, rack, dir, maxBytes, segBytes)
			ns.Stop()
			const n = 10000
			want := map[string]bool{}
			for i := 0; i < n; i++ {
				e := rackEvent(t, rack, i)
				p.pub.Publish(e)
				want[e.ID] = true
				if i%1000 == 0 {
					waitJournalled(t, p.pub) // the journal, not memory, is the bound here
				}
			}
			waitJournalled(t, p.pub)
			dropped := p.pub.Dropped()
			if dropped == 0 {
				t.Fatalf("%d events fit in a journal of %d bytes", n, p.j.Bytes())
			}
			if tt.restart {
				p.stop()
				p = startJournalled(t, js, rack, dir, maxBytes, segBytes)
			}
			ns.Restart()
			flush(t, p.pub)
			seen, reported := streamContents(t, js)
			delivered := 0
			for id, k := range seen {
				if k != 1 {
					t.Fatalf("event %s is in the stream %d times", id, k)
				}
				if want[id] {
					delivered++
				}
			}
			t.Logf("published %d: %d delivered, %d reported dropped", n, delivered, reported)
			if int64(delivered)+reported != n || reported != dropped {
				t.Fatalf("published %d: %d delivered + %d reported dropped (publisher counted %d); want the sum to be %d",
					n, delivered, reported, dropped, n)
			}
		})
	}
}
