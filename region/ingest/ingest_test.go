package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/region/ingest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// store is the event store as the ingester sees it, which can refuse the
// first transactions as a Postgres that is away does, and keeps the size
// of every batch appended.
type store struct {
	*postgres.DB
	mu      sync.Mutex
	failTx  int   // transactions still to fail
	appends []int // events per successful AppendAny
	// inTx, when set, is called by AppendAny within the transaction,
	// before the events are appended.
	inTx func(evs []events.Event)
	// appended, when set, is called after each successful AppendAny.
	appended func(evs []events.Event)
}

func (s *store) InTxNotifyLater(ctx context.Context, fn func(tx pgx.Tx) error) error {
	s.mu.Lock()
	fail := s.failTx > 0
	if fail {
		s.failTx--
	}
	s.mu.Unlock()
	if fail {
		return errors.New("connection refused")
	}
	return s.DB.InTxNotifyLater(ctx, fn)
}

func (s *store) AppendAny(ctx context.Context, tx pgx.Tx, evs []events.Event) ([]postgres.Appended, error) {
	if s.inTx != nil {
		s.inTx(evs)
	}
	out, err := s.DB.AppendAny(ctx, tx, evs)
	if err == nil {
		s.mu.Lock()
		s.appends = append(s.appends, len(evs))
		s.mu.Unlock()
		if s.appended != nil {
			s.appended(evs)
		}
	}
	return out, err
}

func (s *store) batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.appends)
}

type site struct {
	t     *testing.T
	store *store
	js    jetstream.JetStream
	reg   *prometheus.Registry
}

func newSite(t *testing.T) *site {
	t.Helper()
	_, _, js := regiontest.NATS(t)
	return &site{t: t, store: &store{DB: regiontest.DB(t)}, js: js, reg: prometheus.NewRegistry()}
}

// start runs an ingester until the test ends. AckWait is long, so that a
// message is delivered again within a test only when it was nak'd.
func (s *site) start(batch int) { s.startConcurrent(batch, 0) }

// startConcurrent is start storing that many batches at once (0: the
// default).
func (s *site) startConcurrent(batch, concurrency int) {
	s.t.Helper()
	in := ingest.New(s.js, s.store, regiontest.Validator(s.t), ingest.Config{
		Batch: batch, Concurrency: concurrency, AckWait: time.Minute, Logger: regiontest.Logger(), Registerer: s.reg,
	})
	regiontest.Run(s.t, in.Run)
}

// streamOrder checks that each of racks has its events of sent in its
// stream, in the order they were sent.
func (s *site) streamOrder(sent []events.Event, racks ...string) {
	s.t.Helper()
	for _, rack := range racks {
		var got, want []string
		for _, e := range sent {
			if e.Source == events.RackSource(rack) {
				want = append(want, e.ID)
			}
		}
		for _, e := range regiontest.StreamEvents(s.t, s.store.DB, events.RackStreamName(rack)) {
			got = append(got, e.ID)
		}
		if !slices.Equal(got, want) {
			s.t.Errorf("stream of %s: %v, want the published order %v", rack, got, want)
		}
	}
}

// publish puts raw on subject without a message id, so that JetStream
// never drops it as a duplicate: the ingester must.
func (s *site) publish(subject string, raw []byte) {
	s.t.Helper()
	if _, err := s.js.Publish(context.Background(), subject, raw); err != nil {
		s.t.Fatalf("publish on %s: %v", subject, err)
	}
}

func (s *site) publishEvent(e events.Event) {
	s.t.Helper()
	s.publish(events.RackEventSubject(events.RackIDFromSource(e.Source), e.Type), regiontest.Encode(s.t, e))
}

// settled waits until the ingester has acknowledged or terminated every
// message on the stream.
func (s *site) settled() {
	s.t.Helper()
	ctx := context.Background()
	regiontest.Eventually(s.t, 10*time.Second, "every message acknowledged or terminated", func() error {
		stream, err := s.js.Stream(ctx, events.RackStream)
		if err != nil {
			return err
		}
		c, err := stream.Consumer(ctx, ingest.ConsumerName)
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending > 0 || info.NumAckPending > 0 || info.AckFloor.Stream < stream.CachedInfo().State.LastSeq {
			return fmt.Errorf("%d undelivered, %d unacknowledged, acknowledged up to %d of %d",
				info.NumPending, info.NumAckPending, info.AckFloor.Stream, stream.CachedInfo().State.LastSeq)
		}
		return nil
	})
}

func (s *site) logged() map[string]int { return regiontest.Logged(s.t, s.store.DB) }

func (s *site) metric(name string, labels map[string]string) float64 {
	return metrictest.Value(s.t, s.reg, name, labels)
}

func dropped(t *testing.T, rackID string, n int64) events.Event {
	return regiontest.RackEvent(t, rackID, events.TypeEventsDropped, events.EventsDropped{Count: n, Since: time.Now().UTC()})
}

// TestEveryValidEventOnce: events of several racks, some delivered twice
// (in the same batch, and after they are in the log), are in the log once
// each, in each rack's order, and every message is acknowledged.
func TestEveryValidEventOnce(t *testing.T) {
	s := newSite(t)
	rackA, rackB := uuid.NewString(), uuid.NewString()
	var sent []events.Event
	for i := range 20 {
		rack := rackA
		if i%2 == 1 {
			rack = rackB
		}
		e := dropped(t, rack, int64(i+1))
		if i < 2 {
			e = regiontest.Registered(t, rack, "rack-"+rack[:8], time.Second)
		}
		sent = append(sent, e)
		s.publishEvent(e)
	}
	// A rack that republishes after a lost ack: the same events again,
	// before the ingester starts and after they are in.
	for _, e := range sent[5:8] {
		s.publishEvent(e)
	}
	s.start(50)
	s.settled()
	for _, e := range sent[10:12] {
		s.publishEvent(e)
	}
	s.settled()
	logged := s.logged()
	if len(logged) != len(sent) {
		t.Fatalf("%d events in the log, want %d", len(logged), len(sent))
	}
	for _, e := range sent {
		if logged[e.ID] != 1 {
			t.Fatalf("event %s is in the log %d times", e.ID, logged[e.ID])
		}
	}
	if got := s.metric("rackplane_region_events_ingested_total", nil); got != 20 {
		t.Errorf("ingested_total %v, want 20", got)
	}
	if got := s.metric("rackplane_region_events_duplicate_total", nil); got != 5 {
		t.Errorf("duplicate_total %v, want 5", got)
	}
	// The per-stream order is the racks' order.
	s.streamOrder(sent, rackA, rackB)
}

// TestInvalidMessagesAreRejectedAndIngestGoesOn: each kind of bad message,
// between good ones, is recorded with its reason and terminated, once;
// the good ones, before and after it and in the same batch, are in the log.
func TestInvalidMessagesAreRejectedAndIngestGoesOn(t *testing.T) {
	rack, other := uuid.NewString(), uuid.NewString()
	registeredSubject := events.RackEventSubject(rack, events.TypeRackRegistered)
	broken := regiontest.RackEvent(t, rack, events.TypeRackRegistered, map[string]any{"version": 7})
	unknown := regiontest.RackEvent(t, rack, "rackplane.rack.no_such_thing.v1", map[string]int{"x": 1})
	// Valid by its schema, but Postgres refuses to store a NUL character.
	nul := regiontest.Registered(t, rack, "nul\x00name", time.Second)
	tests := []struct {
		name    string
		subject string
		raw     []byte
		reason  string
		eventID string // recorded with the refusal, when the message has one
	}{
		{"not JSON", registeredSubject, []byte("\x00\xffnot json"), events.ReasonMalformed, ""},
		{"not an envelope", registeredSubject, []byte(`{"hello": "world"}`), events.ReasonMalformed, ""},
		{"breaks its schema", registeredSubject, regiontest.Encode(t, broken), events.ReasonSchema, broken.ID},
		{"unknown type", events.RackEventSubject(rack, unknown.Type), regiontest.Encode(t, unknown), events.ReasonUnknownType, unknown.ID},
		{"another rack's event", registeredSubject, regiontest.Encode(t, regiontest.Registered(t, other, "spoof", time.Second)), events.ReasonWrongSubject, ""},
		{"on another type's subject", events.RackEventSubject(rack, events.TypeEventsDropped), regiontest.Encode(t, regiontest.Registered(t, rack, "r", time.Second)), events.ReasonWrongSubject, ""},
		{"refused by Postgres", registeredSubject, regiontest.Encode(t, nul), events.ReasonProjection, nul.ID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each on a database and NATS server of its own
			s := newSite(t)
			before, after := dropped(t, rack, 1), dropped(t, rack, 2)
			// All three are on the stream before the ingester starts, so
			// that they come in one batch.
			s.publishEvent(before)
			s.publish(tt.subject, tt.raw)
			s.publishEvent(after)
			s.start(10)
			s.settled()
			logged := s.logged()
			if len(logged) != 2 || logged[before.ID] != 1 || logged[after.ID] != 1 {
				t.Fatalf("log holds %v, want the good events before and after once each", logged)
			}
			rejected, err := s.store.ListRejected(context.Background(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(rejected) != 1 {
				t.Fatalf("%d rejected records, want 1: %+v", len(rejected), rejected)
			}
			r := rejected[0]
			if r.Reason != tt.reason || r.NATSSubject != tt.subject || r.Detail == "" || string(r.Raw) != string(tt.raw) {
				t.Errorf("recorded %+v, want reason %s on %s with the detail and the message", r, tt.reason, tt.subject)
			}
			if tt.eventID != "" && r.EventID != tt.eventID {
				t.Errorf("recorded event id %q, want %q", r.EventID, tt.eventID)
			}
			if got := s.metric("rackplane_region_events_rejected_total", map[string]string{"reason": tt.reason}); got != 1 {
				t.Errorf("rejected_total{reason=%q} %v, want 1", tt.reason, got)
			}
			if got := s.metric("rackplane_region_events_ingested_total", nil); got != 2 {
				t.Errorf("ingested_total %v, want 2", got)
			}
		})
	}
}

// TestRetriedInOrderWhilePostgresIsAway: a batch whose transaction fails
// is tried again (well before AckWait) rather than skipped, so it goes in
// once when Postgres is back, and the batches behind it do not overtake
// it: the rack's stream is in the order the rack published.
func TestRetriedInOrderWhilePostgresIsAway(t *testing.T) {
	s := newSite(t)
	s.store.failTx = 3
	rack := uuid.NewString()
	var sent []events.Event
	for i := range 25 {
		e := dropped(t, rack, int64(i+1))
		sent = append(sent, e)
		s.publishEvent(e)
	}
	s.start(5)
	// The retries back off 100ms, 200ms, 400ms; AckWait is a minute,
	// longer than settled waits.
	s.settled()
	s.once(sent)
	s.store.mu.Lock()
	left := s.store.failTx
	s.store.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d failures left: the ingester did not retry", left)
	}
	var got, want []string
	for _, e := range regiontest.StreamEvents(t, s.store.DB, events.RackStreamName(rack)) {
		got = append(got, e.ID)
	}
	for _, e := range sent {
		want = append(want, e.ID)
	}
	if !slices.Equal(got, want) {
		t.Errorf("stream order %v, want the published order %v", got, want)
	}
	if got := s.metric("rackplane_region_events_ingested_total", nil); got != 25 {
		t.Errorf("ingested_total %v, want 25", got)
	}
	if got := s.metric("rackplane_region_ingest_batch_failures_total", nil); got != 3 {
		t.Errorf("batch_failures_total %v, want 3", got)
	}
}

// TestBatchClosesOnTimeUnderATrickle: events arriving a millisecond apart
// (never a pause long enough to end a batch) still go in by small
// batches, each closed MaxWait after its first event, not at the size cap.
func TestBatchClosesOnTimeUnderATrickle(t *testing.T) {
	s := newSite(t)
	rack := uuid.NewString()
	s.start(500)
	const n = 300
	for i := range n {
		e := dropped(t, rack, int64(i+1))
		// Published without waiting for JetStream's ack, so that the
		// trickle is steady even on a busy machine.
		if _, err := s.js.PublishAsync(events.RackEventSubject(rack, e.Type), regiontest.Encode(t, e)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-s.js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	s.settled()
	sizes := s.store.batches()
	total := 0
	for _, k := range sizes {
		total += k
	}
	if total != n {
		t.Fatalf("appended %d events in %v, want %d", total, sizes, n)
	}
	// At 1ms apart a 5ms batch holds a handful; allow a busy machine
	// bursts, but not batches that wait for the cap.
	if big := slices.Max(sizes); big > n/3 {
		t.Fatalf("a batch of %d events under a 1ms trickle: %v", big, sizes)
	}
}

// TestBatches: events waiting on the stream go in by transactions of at
// most Batch events, not one by one.
func TestBatches(t *testing.T) {
	s := newSite(t)
	rack := uuid.NewString()
	const n, batch = 45, 10
	for i := range n {
		s.publishEvent(dropped(t, rack, int64(i+1)))
	}
	s.start(batch)
	s.settled()
	sizes := s.store.batches()
	total := 0
	for _, k := range sizes {
		if k > batch {
			t.Fatalf("a transaction of %d events, more than the batch of %d: %v", k, batch, sizes)
		}
		total += k
	}
	if total != n || len(regiontest.StreamEvents(t, s.store.DB, events.RackStreamName(rack))) != n {
		t.Fatalf("appended %d events in %v, want %d", total, sizes, n)
	}
	if len(sizes) >= n {
		t.Fatalf("one transaction per event: %v", sizes)
	}
}

// TestConsumerDeletedFromOutside: a client deleting the region's consumer
// (as anyone with rights on the stream could) does not stop ingest: the
// region makes it again, counts the restart, and the log still has every
// event once, those published before and after the deletion.
func TestConsumerDeletedFromOutside(t *testing.T) {
	s := newSite(t)
	rack := uuid.NewString()
	var sent []events.Event
	publish := func(n int) {
		for range n {
			e := dropped(t, rack, int64(len(sent)+1))
			sent = append(sent, e)
			s.publishEvent(e)
		}
	}
	publish(10)
	s.start(5)
	s.settled()
	for i := range 3 {
		if err := s.js.DeleteConsumer(context.Background(), events.RackStream, ingest.ConsumerName); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
		publish(10)
		regiontest.Eventually(t, 15*time.Second, "every event in the log after the deletion", func() error {
			if n := len(s.logged()); n != len(sent) {
				return fmt.Errorf("%d of %d events in the log", n, len(sent))
			}
			return nil
		})
	}
	s.settled()
	for id, n := range s.logged() {
		if n != 1 {
			t.Fatalf("event %s is in the log %d times", id, n)
		}
	}
	if got := s.metric("rackplane_region_ingest_consumer_restarts_total", nil); got < 3 {
		t.Fatalf("consumer restarts %v, want at least 3", got)
	}
}

// twoLanes returns two racks whose events are in different lanes.
func twoLanes(t *testing.T) (string, string) {
	a := uuid.NewString()
	la := ingest.LaneOf(events.RackEventSubject(a, events.TypeEventsDropped))
	for range 1000 {
		b := uuid.NewString()
		if ingest.LaneOf(events.RackEventSubject(b, events.TypeEventsDropped)) != la {
			return a, b
		}
	}
	t.Fatal("no two racks of different lanes")
	return "", ""
}

// publishTurns publishes n events of each of racks, the racks in turn.
func (s *site) publishTurns(n int, racks ...string) []events.Event {
	var sent []events.Event
	for i := range n {
		for _, rack := range racks {
			e := dropped(s.t, rack, int64(i+1))
			sent = append(sent, e)
			s.publishEvent(e)
		}
	}
	return sent
}

// once checks that every event of sent is in the log once, and nothing
// else is.
func (s *site) once(sent []events.Event) {
	s.t.Helper()
	logged := s.logged()
	if len(logged) != len(sent) {
		s.t.Fatalf("%d events in the log, want %d", len(logged), len(sent))
	}
	for _, e := range sent {
		if logged[e.ID] != 1 {
			s.t.Fatalf("event %s is in the log %d times", e.ID, logged[e.ID])
		}
	}
}

// TestRacksCommitConcurrentlyEachInOrder: while a batch of one rack is in
// its transaction, not yet committed, every event of another rack is
// appended beside it; and each rack's stream is in the order the rack
// published, however the two racks' batches interleave.
func TestRacksCommitConcurrentlyEachInOrder(t *testing.T) {
	s := newSite(t)
	const perRack, batch = 20, 5
	rackA, rackB := twoLanes(t)
	bAll := make(chan struct{})
	var (
		mu         sync.Mutex
		bAppended  int
		held       bool // rack A's first batch was held in its transaction
		overlapped bool // ... while every event of rack B was appended
	)
	s.store.inTx = func(evs []events.Event) {
		mu.Lock()
		first := !held && evs[0].Source == events.RackSource(rackA)
		held = held || first
		mu.Unlock()
		if !first {
			return
		}
		select {
		case <-bAll:
			mu.Lock()
			overlapped = true
			mu.Unlock()
		case <-time.After(5 * time.Second): // one batch at a time never gets there
		}
	}
	s.store.appended = func(evs []events.Event) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if e.Source == events.RackSource(rackB) {
				if bAppended++; bAppended == perRack {
					close(bAll)
				}
			}
		}
	}
	// All on the stream before the ingester starts, rack A's before rack
	// B's, so that the first batch holds rack A's events alone whenever it
	// closes: on a busy machine the reader is not far ahead of the first
	// batch, and taken in turns, A1 B1 A2..., the first batch took both
	// racks' lanes, and rack B then waited for rack A, as it must.
	sent := append(s.publishTurns(perRack, rackA), s.publishTurns(perRack, rackB)...)
	s.startConcurrent(batch, 2)
	s.settled()
	mu.Lock()
	if !held || !overlapped {
		t.Errorf("rack B's %d events were not all appended while rack A's first batch was in its transaction (held %v)", perRack, held)
	}
	mu.Unlock()
	s.once(sent)
	s.streamOrder(sent, rackA, rackB)
}

// TestRetriedInOrderBesideOtherRacks: a batch that fails (Postgres
// refused its transaction) is tried again in place while batches of other
// racks go on; no rack's events are reordered, lost or doubled.
func TestRetriedInOrderBesideOtherRacks(t *testing.T) {
	s := newSite(t)
	rackA, rackB := twoLanes(t)
	s.store.failTx = 4
	sent := s.publishTurns(25, rackA, rackB)
	s.startConcurrent(5, 2)
	s.settled()
	s.once(sent)
	s.streamOrder(sent, rackA, rackB)
	if got := s.metric("rackplane_region_ingest_batch_failures_total", nil); got != 4 {
		t.Errorf("batch_failures_total %v, want 4", got)
	}
}

// TestOneTransactionPerWaitUnderATrickle: events of many racks trickling
// in go in by batches of several racks each, not by a transaction per
// rack: storing batches at once must not multiply the transactions when
// there is no load to share.
func TestOneTransactionPerWaitUnderATrickle(t *testing.T) {
	s := newSite(t)
	racks := make([]string, 20)
	for i := range racks {
		racks[i] = uuid.NewString()
	}
	s.startConcurrent(500, 8)
	var sent []events.Event
	for round := range 10 {
		// The twenty racks' events at once, then a pause: each burst
		// is one batch's worth, whatever its racks' lanes.
		for _, rack := range racks {
			e := dropped(t, rack, int64(round+1))
			sent = append(sent, e)
			if _, err := s.js.PublishAsync(events.RackEventSubject(rack, e.Type), regiontest.Encode(t, e)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-s.js.PublishAsyncComplete():
		case <-time.After(10 * time.Second):
			t.Fatal("publishes not acknowledged")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.settled()
	s.once(sent)
	sizes := s.store.batches()
	// A burst may straddle a batch's close on a busy machine; one
	// transaction per rack and burst would be 200.
	if len(sizes) > 3*10 {
		t.Errorf("%d transactions for 10 bursts of 20 racks' events: %v", len(sizes), sizes)
	}
}

// TestReadersWokenByIngestedEvents: a reader at the end of the log that
// waits for the log's notification (as GET /api/v1/events?wait= does, with
// no timer of its own here) is woken for every event ingested, whichever
// of the concurrent storers committed it: ingest's transactions do not
// notify themselves, the ingester does after their commits.
func TestReadersWokenByIngestedEvents(t *testing.T) {
	s := newSite(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := s.store.NewEventWatch()
	up := w.Next() // the watch fires once when its session listens
	go w.Run(ctx)
	select {
	case <-up:
	case <-time.After(30 * time.Second):
		t.Fatal("event watch not listening after 30s")
	}
	s.startConcurrent(3, 4)
	racks := make([]string, 8)
	for i := range racks {
		racks[i] = uuid.NewString()
	}
	var cur postgres.Cursor
	for round := range 6 {
		want := map[string]bool{}
		for _, rack := range racks[:1+round] {
			e := dropped(t, rack, int64(round+1))
			want[e.ID] = true
			s.publishEvent(e)
		}
		for len(want) > 0 {
			woken := w.Next()
			evs, next, err := s.store.ReadEvents(ctx, cur, 1000, postgres.ReadFilter{})
			if err != nil {
				t.Fatal(err)
			}
			cur = next
			for _, e := range evs {
				delete(want, e.ID)
			}
			if len(want) == 0 {
				break
			}
			select {
			case <-woken:
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: %d ingested events not read, and the reader not woken in 30s", round, len(want))
			}
		}
	}
}
