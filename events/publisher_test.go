package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
)

// TestPublisherBuffersAndReportsDrops publishes while NATS is away: the
// publisher never blocks, keeps the newest events up to its bound, and once
// NATS is back sends them with an events_dropped event counting the rest.
func TestPublisherBuffersAndReportsDrops(t *testing.T) {
	ns := natsserver.StartTest(t)
	ctx := context.Background()
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	if err := events.EnsureStreams(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	rack := uuid.NewString()
	pub := events.NewPublisher(js, events.PublisherConfig{
		Source: events.RackSource(rack), Subject: events.RackStreamName(rack), Buffer: 100, Batch: 10, AckTimeout: 200 * time.Millisecond,
	})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go pub.Run(pctx)

	ns.Stop()
	var ids []string
	start := time.Now()
	for i := 0; i < 250; i++ {
		e, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
			events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
		pub.Publish(e)
		ids = append(ids, e.ID)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("publishing 250 events with NATS away took %s: Publish blocks", took)
	}
	if pub.Buffered() > 100+10+1 { // the bound, a batch in flight, the drop report
		t.Fatalf("holding %d events with a buffer of 100", pub.Buffered())
	}
	ns.Restart()
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatal(err)
	}

	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := events.NewValidator()
	got := map[string]bool{}
	var dropped int64
	batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		e, err := v.Decode(m.Data())
		if err != nil {
			t.Fatalf("published event does not validate: %v", err)
		}
		if e.Type == events.TypeEventsDropped {
			var d events.EventsDropped
			_ = e.DecodeData(&d)
			dropped += d.Count
			continue
		}
		got[e.ID] = true
	}
	// Nothing vanishes unaccounted: every event arrived or was reported
	// dropped (an event counted as dropped may still have arrived, from
	// the NATS client's reconnect buffer: delivery is at least once).
	if int64(len(got))+dropped < 250 || dropped != pub.Dropped() {
		t.Fatalf("%d events arrived and %d reported dropped (publisher counted %d); want 250 in all", len(got), dropped, pub.Dropped())
	}
	// The newest ones, up to the bound, are never the ones dropped.
	for _, id := range ids[150:] {
		if !got[id] {
			t.Fatalf("one of the newest 100 events is missing: the oldest must be dropped first")
		}
	}
}
