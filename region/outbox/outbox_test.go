package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/region/outbox"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

type site struct {
	t   *testing.T
	db  *postgres.DB
	ns  *natsserver.Test
	js  jetstream.JetStream
	reg *prometheus.Registry
}

func newSite(t *testing.T) *site {
	t.Helper()
	ns, _, js := regiontest.NATS(t)
	return &site{t: t, db: regiontest.DB(t), ns: ns, js: js, reg: prometheus.NewRegistry()}
}

// start runs a relay until the test ends, and waits until it listens for
// the emits' notifications. Its poll is long: the emits themselves must
// wake it.
func (s *site) start(batch int) {
	s.t.Helper()
	r := outbox.New(s.db, s.js, outbox.Config{
		Batch: batch, Poll: time.Minute, AckTimeout: 200 * time.Millisecond,
		Logger: regiontest.Logger(), Registerer: s.reg,
	})
	regiontest.Run(s.t, r.Run)
	regiontest.Eventually(s.t, 10*time.Second, "the relay listening", func() error {
		var n int
		err := s.db.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = $1 AND state = 'idle'`,
			`LISTEN "`+postgres.OutboxChannel+`"`).Scan(&n)
		if err == nil && n != 1 {
			err = fmt.Errorf("%d sessions listening", n)
		}
		return err
	})
}

// emit writes n region events, each a rack going offline, in one
// transaction; when fail is set, the transaction fails after them and
// rolls back.
func (s *site) emit(n int, fail bool) []events.Event {
	s.t.Helper()
	ctx := context.Background()
	var evs []events.Event
	err := s.db.InTx(ctx, func(tx pgx.Tx) error {
		evs = evs[:0]
		for range n {
			rack := uuid.NewString()
			e, err := events.New(events.RegionSource, events.TypeRackOffline, events.RackStreamName(rack), time.Now(),
				events.RackLiveness{RackID: rack, Reason: "test"})
			if err != nil {
				return err
			}
			if _, err := s.db.Emit(ctx, tx, e.Subject, postgres.ExpectNoStream, e); err != nil {
				return err
			}
			evs = append(evs, e)
		}
		if fail {
			return errors.New("the state change failed")
		}
		return nil
	})
	if err != nil && !fail {
		s.t.Fatal(err)
	}
	return evs
}

// relayed reads the region stream from its start until it holds n
// messages, and returns their event ids in stream order; it fails when
// one is not the event its Nats-Msg-Id names.
func (s *site) relayed(n int) []string {
	s.t.Helper()
	ctx := context.Background()
	cons, err := s.js.OrderedConsumer(ctx, events.RegionStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		s.t.Fatal(err)
	}
	v := regiontest.Validator(s.t)
	var ids []string
	deadline := time.Now().Add(time.Minute)
	for len(ids) < n {
		m, err := cons.Next(jetstream.FetchMaxWait(max(time.Until(deadline), time.Millisecond)))
		if err != nil {
			s.t.Fatalf("%d region events on the stream, want %d: %v", len(ids), n, err)
		}
		e, err := v.Decode(m.Data())
		if err != nil {
			s.t.Fatalf("region event on %s does not validate: %v", m.Subject(), err)
		}
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != e.ID {
			s.t.Fatalf("message id %q for event %s", id, e.ID)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

// streamLength is how many messages the region stream holds.
func (s *site) streamLength() uint64 {
	s.t.Helper()
	st, err := s.js.Stream(context.Background(), events.RegionStream)
	if err != nil {
		s.t.Fatal(err)
	}
	return st.CachedInfo().State.Msgs
}

// drained waits until the outbox is empty and the relay has said so.
func (s *site) drained() {
	s.t.Helper()
	regiontest.Eventually(s.t, 10*time.Second, "outbox drained", func() error {
		n, err := s.db.OutboxLength(context.Background())
		if err != nil {
			return err
		}
		if g := s.pending(); n != 0 || g != 0 {
			return fmt.Errorf("%d in the outbox, the relay says %v", n, g)
		}
		return nil
	})
}

func (s *site) pending() float64 {
	return metrictest.Value(s.t, s.reg, "rackplane_region_outbox_pending", nil)
}

func ids(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

// TestRelaysCommittedEventsInOrder: events emitted in committed
// transactions reach the region stream in the order they were written,
// with their ids as message ids, in batches of the relay's size; those
// of a transaction that rolled back never do.
func TestRelaysCommittedEventsInOrder(t *testing.T) {
	tests := []struct {
		name  string
		batch int
	}{
		{"one batch", 500},
		{"batches of three", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSite(t)
			var want []events.Event
			want = append(want, s.emit(4, false)...)
			s.emit(3, true)
			s.start(tt.batch)
			want = append(want, s.emit(1, false)...)
			want = append(want, s.emit(5, false)...)
			if got := s.relayed(len(want)); !slices.Equal(got, ids(want)) {
				t.Fatalf("relayed %v, want %v", got, ids(want))
			}
			s.drained()
			if n := s.streamLength(); n != uint64(len(want)) {
				t.Fatalf("the stream holds %d events, want %d", n, len(want))
			}
			if got := metrictest.Value(t, s.reg, "rackplane_region_outbox_relayed_total", nil); got != float64(len(want)) {
				t.Errorf("relayed_total %v, want %d", got, len(want))
			}
		})
	}
}

// TestSurvivesNATSBeingAway: while NATS is away, emitted events wait in
// the outbox, and the relay reports how many; when NATS is back they are
// relayed, in order, once each on the stream.
func TestSurvivesNATSBeingAway(t *testing.T) {
	s := newSite(t)
	s.start(500)
	before := s.emit(2, false)
	s.relayed(2)
	s.drained()

	s.ns.Stop()
	during := s.emit(3, false)
	during = append(during, s.emit(4, false)...)
	regiontest.Eventually(t, 10*time.Second, "the relay reports the events waiting", func() error {
		if got := s.pending(); got != 7 {
			return fmt.Errorf("pending %v, want 7", got)
		}
		return nil
	})
	if n, err := s.db.OutboxLength(context.Background()); err != nil || n != 7 {
		t.Fatalf("outbox holds %d (%v), want 7", n, err)
	}

	s.ns.Restart()
	want := append(ids(before), ids(during)...)
	if got := s.relayed(len(want)); !slices.Equal(got, want) {
		t.Fatalf("relayed %v, want %v", got, want)
	}
	s.drained()
	if n := s.streamLength(); n != uint64(len(want)) {
		t.Fatalf("the stream holds %d events, want %d: some were published twice", n, len(want))
	}
}

// TestPendingWhileAPassWaits: while a relay pass waits for JetStream's
// acknowledgements (the stream is gone and only a tap listens on its
// subjects, so nothing answers), the pending gauge counts the events that
// wait, rather than what the last finished pass saw.
func TestPendingWhileAPassWaits(t *testing.T) {
	s := newSite(t)
	r := outbox.New(s.db, s.js, outbox.Config{
		Poll: time.Minute, AckTimeout: time.Hour, Logger: regiontest.Logger(), Registerer: s.reg,
	})
	regiontest.Run(t, r.Run)
	s.emit(1, false)
	s.relayed(1)
	s.drained()

	ctx := context.Background()
	if err := s.js.DeleteStream(ctx, events.RegionStream); err != nil {
		t.Fatal(err)
	}
	nc := s.ns.Connect()
	tapped := make(chan struct{}, 10)
	if _, err := nc.Subscribe(events.RegionEventsWildcard, func(*nats.Msg) { tapped <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	s.emit(2, false)
	for i := range 2 { // the pass has published, and waits
		select {
		case <-tapped:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 2 events published", i)
		}
	}
	regiontest.Eventually(t, 10*time.Second, "the gauge counting the waiting events", func() error {
		if got := s.pending(); got != 2 {
			return fmt.Errorf("pending %v, want 2", got)
		}
		return nil
	})
}

// TestRelayRecoversFromUnansweredPublishes: publishes that JetStream never
// answers (the stream is gone and only a tap listens) must not pile up in
// the client: once more went out unanswered than nats.go keeps pending
// (4000), every later publish would fail until the connection dropped.
// When the stream is back, the waiting events are relayed.
func TestRelayRecoversFromUnansweredPublishes(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 4500 events into the void first: skipped with -short")
	}
	s := newSite(t)
	ctx := context.Background()
	if err := s.js.DeleteStream(ctx, events.RegionStream); err != nil {
		t.Fatal(err)
	}
	nc := s.ns.Connect()
	var tapped atomic.Int64
	tap, err := nc.Subscribe(events.RegionEventsWildcard, func(*nats.Msg) { tapped.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var want []events.Event
	for range 9 {
		want = append(want, s.emit(500, false)...)
	}
	r := outbox.New(s.db, s.js, outbox.Config{
		// Short enough to run 4500 publishes into the void quickly, long
		// enough for JetStream to answer on a loaded machine once the
		// stream is back.
		Batch: 500, Poll: time.Minute, AckTimeout: 250 * time.Millisecond, Logger: regiontest.Logger(), Registerer: s.reg,
	})
	regiontest.Run(t, r.Run)
	regiontest.Eventually(t, time.Minute, "more publishes unanswered than nats.go keeps pending", func() error {
		if n := tapped.Load(); n < 4500 {
			return fmt.Errorf("%d published", n)
		}
		return nil
	})
	if err := tap.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(ctx, s.js, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := s.relayed(len(want)); !slices.Equal(got, ids(want)) {
		t.Fatalf("relayed %d events, not the %d emitted in order", len(got), len(want))
	}
}
