package eventbus_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
)

// startStreams starts a NATS server with Rackplane's streams.
func startStreams(t testing.TB) (*natsserver.Test, jetstream.JetStream) {
	t.Helper()
	ns := natsserver.StartTest(t)
	js, err := jetstream.New(ns.Connect())
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(context.Background(), js, time.Hour); err != nil {
		t.Fatal(err)
	}
	return ns, js
}

// TestPublisherBuffersAndReportsDrops publishes while NATS is away: the
// publisher never blocks, keeps the newest events up to its bound, and once
// NATS is back sends them with an events_dropped event counting the rest.
func TestPublisherBuffersAndReportsDrops(t *testing.T) {
	ns, js := startStreams(t)
	ctx := context.Background()
	rack := uuid.NewString()
	pub := eventbus.NewPublisher(js, eventbus.PublisherConfig{
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
	// Nothing vanishes unaccounted, nothing is counted twice: every event
	// arrived or was reported dropped, not both.
	if int64(len(got))+dropped != 250 || dropped != pub.Dropped() {
		t.Fatalf("%d events arrived and %d reported dropped (publisher counted %d); want 250 in all", len(got), dropped, pub.Dropped())
	}
	// The newest ones, up to the bound, are never the ones dropped.
	for _, id := range ids[150:] {
		if !got[id] {
			t.Fatalf("one of the newest 100 events is missing: the oldest must be dropped first")
		}
	}
}

// syncBuffer is a log sink the publisher's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), `msg="`+msg+`"`)
}

// TestPublisherLogsAnOutageSparingly: while NATS is away the publisher
// retries several times a second, but its log says that publishing failed
// once, that it still fails every 30 s of the (injected) clock, and that
// it works again when NATS is back.
func TestPublisherLogsAnOutageSparingly(t *testing.T) {
	ns, js := startStreams(t)
	ctx := context.Background()
	var logs syncBuffer
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC).UnixNano())
	rack := uuid.NewString()
	pub := eventbus.NewPublisher(js, eventbus.PublisherConfig{
		Source: events.RackSource(rack), Subject: events.RackStreamName(rack), AckTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return time.Unix(0, now.Load()) },
	})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go pub.Run(pctx)

	ns.Stop()
	e, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
		events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
	pub.Publish(e)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; log:\n%s", what, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("the outage logged", func() bool { return logs.count("publishing events failed, will retry") == 1 })
	now.Add(int64(31 * time.Second))
	waitFor("a reminder after 30s", func() bool { return logs.count("publishing events still failing, retrying") == 1 })
	ns.Restart()
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	waitFor("the recovery logged", func() bool { return logs.count("publishing events again") == 1 })
	if n, m := logs.count("publishing events failed, will retry"), logs.count("publishing events still failing, retrying"); n != 1 || m != 1 {
		t.Fatalf("the outage took %d first and %d reminder lines, want 1 and 1; log:\n%s", n, m, logs.String())
	}
	if !strings.Contains(logs.String(), "failing_for=31") {
		t.Fatalf("the recovery line does not say how long publishing failed; log:\n%s", logs.String())
	}
}

// TestPublisherRecoversFromUnansweredPublishes: publishes that JetStream
// never answers (the stream is gone and only a tap listens, as when a
// server's store fails while the connection stays up) must not pile up in
// the client: once more went out unanswered than nats.go keeps pending
// (4000), every later publish would fail until the connection dropped.
// When the stream is back, every event arrives.
func TestPublisherRecoversFromUnansweredPublishes(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 4500 times into the void first: skipped with -short")
	}
	ns, js := startStreams(t)
	ctx := context.Background()
	if err := js.DeleteStream(ctx, events.RackStream); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	var tapped atomic.Int64
	tap, err := nc.Subscribe(events.RackEventsWildcard, func(*nats.Msg) { tapped.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rack := uuid.NewString()
	pub := eventbus.NewPublisher(js, eventbus.PublisherConfig{
		Source: events.RackSource(rack), Subject: events.RackStreamName(rack), Buffer: 10000, Batch: 500, AckTimeout: 250 * time.Millisecond,
	})
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go pub.Run(pctx)
	var ids []string
	for i := 0; i < 1000; i++ {
		e, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
			events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
		pub.Publish(e)
		ids = append(ids, e.ID)
	}
	deadline := time.Now().Add(time.Minute)
	for tapped.Load() < 4500 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes went out in a minute", tapped.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tap.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatalf("flush after the stream came back: %v", err)
	}
	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < len(ids) {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			got[m.Headers().Get(nats.MsgIdHdr)] = true
			n++
		}
		if n == 0 {
			break
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Fatalf("%d of %d events in the stream after it came back", len(got), len(ids))
		}
	}
}
