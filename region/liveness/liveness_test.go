package liveness_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/region/liveness"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// clock is the monitors' time, which only the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type site struct {
	t     *testing.T
	db    *postgres.DB
	nc    *nats.Conn
	clock *clock
}

func newSite(t *testing.T) *site {
	t.Helper()
	_, nc, _ := regiontest.NATS(t)
	return &site{t: t, db: regiontest.DB(t), nc: nc, clock: &clock{t: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)}}
}

// register records rackID's registration, saying it beats every interval
// (0: it does not say): the rack is online from then on.
func (s *site) register(rackID string, interval time.Duration) {
	s.t.Helper()
	err := s.db.InTx(context.Background(), func(tx pgx.Tx) error {
		_, err := s.db.AppendAny(context.Background(), tx, []events.Event{regiontest.Registered(s.t, rackID, "rack", interval)})
		return err
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

type monitor struct {
	*liveness.Monitor
	reg *prometheus.Registry
}

// start runs a monitor (a region instance's) on the site's clock. Its
// own ticks check every few milliseconds, but the clock stands still
// between the test's moves, so what they find is the test's to say.
func (s *site) start(cfg liveness.Config) monitor {
	s.t.Helper()
	m := monitor{reg: prometheus.NewRegistry()}
	cfg.Now, cfg.Tick, cfg.Logger, cfg.Registerer = s.clock.Now, 5*time.Millisecond, regiontest.Logger(), m.reg
	m.Monitor = liveness.New(s.nc, s.db, regiontest.Validator(s.t), cfg)
	regiontest.Run(s.t, m.Run)
	// It subscribes as it starts: a rack nobody registered beats until
	// the monitor hears it.
	probe := uuid.NewString()
	regiontest.Eventually(s.t, 5*time.Second, "monitor listening", func() error {
		s.publish(events.HeartbeatSubject(probe), s.heartbeat(probe))
		if _, ok := m.LastHeartbeat(probe); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	return m
}

func (s *site) heartbeat(rackID string) []byte {
	return regiontest.Encode(s.t, regiontest.RackEvent(s.t, rackID, events.TypeHeartbeat, events.Heartbeat{Seq: 1, IntervalMS: 1000}))
}

func (s *site) publish(subject string, raw []byte) {
	s.t.Helper()
	if err := s.nc.Publish(subject, raw); err != nil {
		s.t.Fatal(err)
	}
	if err := s.nc.Flush(); err != nil {
		s.t.Fatal(err)
	}
}

// beat sends one heartbeat of rackID's and waits until every monitor has
// it, at the clock's present time.
func (s *site) beat(rackID string, ms ...monitor) {
	s.t.Helper()
	now := s.clock.Now()
	s.publish(events.HeartbeatSubject(rackID), s.heartbeat(rackID))
	regiontest.Eventually(s.t, 5*time.Second, "heartbeat received", func() error {
		for i, m := range ms {
			if last, ok := m.LastHeartbeat(rackID); !ok || !last.Equal(now) {
				return fmt.Errorf("monitor %d last heard the rack at %v", i, last)
			}
		}
		return nil
	})
}

// transitions returns rackID's liveness events in the log.
func (s *site) transitions(rackID string) []events.Event {
	s.t.Helper()
	var out []events.Event
	for _, e := range regiontest.StreamEvents(s.t, s.db, events.RackStreamName(rackID)) {
		if e.Type == events.TypeRackOffline || e.Type == events.TypeRackOnline {
			out = append(out, e)
		}
	}
	return out
}

func types(evs []events.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, strings.TrimSuffix(strings.TrimPrefix(e.Type, "rackplane.region."), ".v1"))
	}
	return strings.Join(s, ",")
}

// waitTransitions waits until rackID's liveness events are want (such as
// "rack_offline,rack_online"), and returns them.
func (s *site) waitTransitions(rackID, want string) []events.Event {
	s.t.Helper()
	var got []events.Event
	regiontest.Eventually(s.t, 5*time.Second, "transitions "+want, func() error {
		if got = s.transitions(rackID); types(got) != want {
			return fmt.Errorf("transitions %q", types(got))
		}
		return nil
	})
	return got
}

// check runs a check as a tick would, then makes sure the transitions
// are still want.
func (s *site) check(m monitor, rackID, want string) {
	s.t.Helper()
	if err := m.Check(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	if got := types(s.transitions(rackID)); got != want {
		s.t.Fatalf("transitions %q, want %q", got, want)
	}
}

func (s *site) online(rackID string) bool {
	s.t.Helper()
	r, err := s.db.GetRack(context.Background(), rackID)
	if err != nil {
		s.t.Fatal(err)
	}
	return r.Online
}

func livenessData(t *testing.T, e events.Event) events.RackLiveness {
	t.Helper()
	var d events.RackLiveness
	if err := e.DecodeData(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestOfflineAfterMissesOnlineOnBeat: a rack is declared offline once it
// has missed the configured number of its heartbeat intervals, not a
// moment before, and online again by its next heartbeat; each transition
// is one event, whatever the number of checks.
func TestOfflineAfterMissesOnlineOnBeat(t *testing.T) {
	tests := []struct {
		name       string
		misses     int
		interval   time.Duration // the rack's, as registered (0: not said)
		defaultInt time.Duration
		deadline   time.Duration
	}{
		{"three misses of the rack's interval", 3, 2 * time.Second, 5 * time.Second, 6 * time.Second},
		{"one miss", 1, 2 * time.Second, 5 * time.Second, 2 * time.Second},
		{"the default interval for a rack that did not say", 3, 0, time.Second, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each on a database and NATS server of its own
			s := newSite(t)
			rack := uuid.NewString()
			s.register(rack, tt.interval)
			m := s.start(liveness.Config{Misses: tt.misses, DefaultInterval: tt.defaultInt})
			beatAt := s.clock.Now()
			s.beat(rack, m)

			s.clock.Advance(tt.deadline)
			s.check(m, rack, "")
			if !s.online(rack) {
				t.Fatal("offline at the deadline")
			}
			s.clock.Advance(time.Millisecond)
			offline := s.waitTransitions(rack, "rack_offline")
			s.check(m, rack, "rack_offline")
			if d := livenessData(t, offline[0]); d.RackID != rack || d.LastHeartbeat == nil || !d.LastHeartbeat.Equal(beatAt) || d.Reason != "missed heartbeats" {
				t.Fatalf("rack_offline says %+v, want the heartbeat at %v", d, beatAt)
			}
			if s.online(rack) {
				t.Fatal("the rack is still online after its rack_offline")
			}

			s.clock.Advance(time.Hour)
			s.check(m, rack, "rack_offline")
			s.beat(rack, m)
			online := s.waitTransitions(rack, "rack_offline,rack_online")[1]
			s.check(m, rack, "rack_offline,rack_online")
			if d := livenessData(t, online); d.Reason != "heartbeats resumed" || d.LastHeartbeat == nil || !d.LastHeartbeat.Equal(s.clock.Now()) {
				t.Fatalf("rack_online says %+v", d)
			}
			if !s.online(rack) {
				t.Fatal("the rack is offline after its rack_online")
			}
			// The counter counts a transition once its event is committed,
			// so it may follow the event the test saw by a moment.
			for to, want := range map[string]float64{"offline": 1, "online": 1} {
				var got float64
				for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
					if got = metrictest.Value(t, m.reg, "rackplane_region_rack_transitions_total", map[string]string{"to": to}); got >= want {
						break
					}
				}
				if got != want {
					t.Errorf("transitions_total{to=%q} %v, want %v", to, got, want)
				}
			}
			// Each transition went to the outbox with its event.
			if n, err := s.db.OutboxLength(context.Background()); err != nil || n != 2 {
				t.Errorf("outbox holds %d (%v), want the 2 transitions", n, err)
			}
		})
	}
}

// TestSilentSinceRegionStart: a rack online in the database that this
// region instance never heard is offline once the deadline has passed
// since the instance started.
func TestSilentSinceRegionStart(t *testing.T) {
	s := newSite(t)
	rack := uuid.NewString()
	s.register(rack, time.Second)
	m := s.start(liveness.Config{Misses: 3})
	s.clock.Advance(3 * time.Second)
	s.check(m, rack, "")
	s.clock.Advance(time.Millisecond)
	d := livenessData(t, s.waitTransitions(rack, "rack_offline")[0])
	if d.Reason != "no heartbeat since region start" || d.LastHeartbeat != nil {
		t.Fatalf("rack_offline says %+v", d)
	}
}

// TestTwoRegionsRecordATransitionOnce: two region instances watching the
// same rack declare each of its transitions once between them.
func TestTwoRegionsRecordATransitionOnce(t *testing.T) {
	s := newSite(t)
	rack := uuid.NewString()
	s.register(rack, time.Second)
	cfg := liveness.Config{Misses: 2}
	a, b := s.start(cfg), s.start(cfg)
	s.beat(rack, a, b)
	s.clock.Advance(2*time.Second + time.Millisecond)
	var wg sync.WaitGroup
	for _, m := range []monitor{a, b, a, b} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Check(context.Background()) }()
	}
	wg.Wait()
	s.waitTransitions(rack, "rack_offline")
	s.beat(rack, a, b)
	s.waitTransitions(rack, "rack_offline,rack_online")
	s.check(a, rack, "rack_offline,rack_online")
	s.check(b, rack, "rack_offline,rack_online")
	for _, to := range []string{"offline", "online"} {
		got := metrictest.Value(t, a.reg, "rackplane_region_rack_transitions_total", map[string]string{"to": to}) +
			metrictest.Value(t, b.reg, "rackplane_region_rack_transitions_total", map[string]string{"to": to})
		if got != 1 {
			t.Errorf("the two instances counted %v transitions to %s, want 1", got, to)
		}
	}
}

// TestBadHeartbeats: heartbeats that are not valid, are not heartbeats or
// come on another rack's subject count for nothing; each subject's are
// recorded with their reason once every BadBeatEvery.
func TestBadHeartbeats(t *testing.T) {
	s := newSite(t)
	rack, other := uuid.NewString(), uuid.NewString()
	s.register(rack, time.Second)
	m := s.start(liveness.Config{Misses: 3, BadBeatEvery: time.Minute})
	subject := events.HeartbeatSubject(rack)
	spoof := s.heartbeat(other)
	bad := [][]byte{
		[]byte(`{"seq": 1}`),
		[]byte("\x00"),
		spoof,
		regiontest.Encode(t, regiontest.Registered(t, rack, "rack", time.Second)),
	}
	counted := func() float64 { return metrictest.Value(t, m.reg, "rackplane_region_heartbeats_rejected_total", nil) }
	for _, b := range bad {
		s.publish(subject, b)
	}
	want := float64(len(bad))
	// records waits until the monitor has counted every bad heartbeat sent
	// and there are n records, and returns them, newest first.
	records := func(n int) []postgres.Rejected {
		var got []postgres.Rejected
		regiontest.Eventually(t, 5*time.Second, fmt.Sprintf("%d rejected records", n), func() error {
			if c := counted(); c != want {
				return fmt.Errorf("%v bad heartbeats counted, want %v", c, want)
			}
			var err error
			if got, err = s.db.ListRejected(context.Background(), 100); err != nil || len(got) != n {
				return fmt.Errorf("%d records (%v): %+v", len(got), err, got)
			}
			return nil
		})
		return got
	}
	if r := records(1)[0]; r.NATSSubject != subject || r.Reason != events.ReasonMalformed || r.Detail == "" {
		t.Fatalf("recorded %+v, want the first, malformed", r)
	}
	if _, ok := m.LastHeartbeat(rack); ok {
		t.Fatal("a bad heartbeat counted as the rack's")
	}
	if _, ok := m.LastHeartbeat(other); ok {
		t.Fatal("a heartbeat on another rack's subject counted as its sender's")
	}
	s.clock.Advance(3*time.Second + time.Millisecond)
	s.check(m, rack, "rack_offline")

	// A minute on, the next bad one is recorded, with its own reason.
	s.clock.Advance(time.Minute)
	s.publish(subject, spoof)
	want++
	if r := records(2)[0]; r.NATSSubject != subject || r.Reason != events.ReasonWrongSubject || r.Source != events.RackSource(other) {
		t.Fatalf("recorded %+v, want the spoofed heartbeat as wrong_subject", r)
	}
}
