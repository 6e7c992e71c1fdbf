package subnets_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/subnets"
	"github.com/rackplane/rackplane/schema"
)

const (
	rackID  = "0190b6a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"
	otherID = "0190b6a4-1c2d-7e3f-8a9b-0c1d2e3f4a5c"
)

func subnet(cidr, reserved string) events.Subnet {
	p := netip.MustParsePrefix(cidr)
	s := events.Subnet{CIDR: p, Interface: "eth1", LeaseSeconds: 600}
	if reserved != "" {
		s.Reservations = []events.SubnetReservation{{MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr(reserved)}}
	}
	return s
}

func regionEvent(t *testing.T, typ, id string, data any) events.Event {
	t.Helper()
	e, err := events.New(events.RegionSource, typ, events.SubnetStreamName(id), time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// changes records what OnChange was given.
type changes struct {
	mu   sync.Mutex
	last []events.Subnet
	n    int
}

func (c *changes) record(s []events.Subnet) { c.mu.Lock(); c.last, c.n = s, c.n+1; c.mu.Unlock() }
func (c *changes) cidrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, s := range c.last {
		out = append(out, s.CIDR.String())
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// regionBus starts an embedded NATS server with the event streams and the
// region's answer to the follow rpc, and returns a connection, its
// JetStream, and a publisher of region events that returns each one's
// stream sequence.
func regionBus(ctx context.Context, t *testing.T) (*nats.Conn, jetstream.JetStream, func(events.Event) uint64) {
	t.Helper()
	nc := natsserver.StartTest(t).Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, time.Second)
	t.Cleanup(srv.Close)
	if err := eventbus.ServeFollow(srv, js); err != nil {
		t.Fatal(err)
	}
	return nc, js, func(e events.Event) uint64 {
		t.Helper()
		m, err := eventbus.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
}

// TestFollowsRegionAndSurvivesRestart: subnets for this rack arrive from
// the region stream and reach OnChange; another rack's never reach it; a
// subnet that moves away or is deleted goes; a restart without NATS has
// what was cached; a restart with NATS resumes after the last sequence.
func TestFollowsRegionAndSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc, js, publish := regionBus(ctx, t)
	dir := t.TempDir()
	var got changes
	reg := prometheus.NewRegistry()
	c, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir, JetStream: js, NATS: nc, OnChange: got.record, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()

	a, b, other := uuid.NewString(), uuid.NewString(), uuid.NewString()
	publish(regionEvent(t, events.TypeSubnetSet, a, events.SubnetSet{SubnetID: a, RackID: rackID, Subnet: subnet("10.20.0.0/24", "10.20.0.10")}))
	publish(regionEvent(t, events.TypeSubnetSet, other, events.SubnetSet{SubnetID: other, RackID: otherID, Subnet: subnet("10.30.0.0/24", "")}))
	publish(regionEvent(t, events.TypeSubnetSet, b, events.SubnetSet{SubnetID: b, RackID: rackID, Subnet: subnet("10.21.0.0/24", "")}))
	waitFor(t, "both subnets of this rack", func() bool { return slices.Equal(got.cidrs(), []string{"10.20.0.0/24", "10.21.0.0/24"}) })

	// A change of the reservation arrives as a whole subnet.
	publish(regionEvent(t, events.TypeSubnetSet, a, events.SubnetSet{SubnetID: a, RackID: rackID, Subnet: subnet("10.20.0.0/24", "10.20.0.20")}))
	waitFor(t, "the changed reservation", func() bool {
		ss := c.Subnets()
		return len(ss) == 2 && ss[slices.IndexFunc(ss, func(s events.Subnet) bool { return s.CIDR.String() == "10.20.0.0/24" })].Reservations[0].IP.String() == "10.20.0.20"
	})
	// b moves to the other rack: the region tells this one it is gone
	// from here, and this one stops serving it.
	publish(regionEvent(t, events.TypeSubnetDeleted, b, events.SubnetDeleted{SubnetID: b, RackID: rackID}))
	publish(regionEvent(t, events.TypeSubnetSet, b, events.SubnetSet{SubnetID: b, RackID: otherID, Subnet: subnet("10.21.0.0/24", "")}))
	waitFor(t, "the moved subnet to go", func() bool { return slices.Equal(got.cidrs(), []string{"10.20.0.0/24"}) })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, subnets.File)); err != nil {
		t.Fatalf("no cache file: %v", err)
	}
	if n := metrictest.Value(t, reg, "rackplane_region_subnet_events_total", map[string]string{"outcome": "other"}); n != 0 {
		t.Fatalf("%v subnet events of another rack reached this one", n)
	}

	// Restarted with the region away: the cached subnet is served.
	var again changes
	c2, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir, OnChange: again.record})
	if err != nil {
		t.Fatal(err)
	}
	offline, stopOffline := context.WithCancel(ctx)
	go func() { done <- c2.Run(offline) }()
	waitFor(t, "the cached subnet after a restart", func() bool { return slices.Equal(again.cidrs(), []string{"10.20.0.0/24"}) })
	if ip := c2.Subnets()[0].Reservations[0].IP.String(); ip != "10.20.0.20" {
		t.Fatalf("cached reservation %s, want the latest, 10.20.0.20", ip)
	}
	stopOffline()
	<-done

	// Deleted while the rack was down: a restart with the region reads
	// only what it missed, and drops the subnet.
	publish(regionEvent(t, events.TypeSubnetDeleted, a, events.SubnetDeleted{SubnetID: a, RackID: rackID}))
	var third changes
	c3, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir, JetStream: js, NATS: nc, OnChange: third.record})
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- c3.Run(ctx) }()
	waitFor(t, "the deletion", func() bool {
		third.mu.Lock()
		defer third.mu.Unlock()
		return third.n >= 2 && len(third.last) == 0
	})
	cancel()
	<-done
}

// TestRefusesInvalid: events that break the schema or the subnet rules
// change nothing and are counted.
func TestRefusesInvalid(t *testing.T) {
	reg := prometheus.NewRegistry()
	var got changes
	c, err := subnets.New(subnets.Config{RackID: rackID, DataDir: t.TempDir(), OnChange: got.record, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	bad := subnet("10.20.0.0/24", "10.99.0.1") // reservation outside the subnet
	e := regionEvent(t, events.TypeSubnetSet, id, events.SubnetSet{SubnetID: id, RackID: rackID, Subnet: bad})
	raw, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range [][]byte{raw, []byte("{"), []byte(`{"specversion":"1.0","type":"rackplane.region.subnet_set.v1"}`)} {
		if err := c.Receive(msg, 1); err == nil {
			t.Errorf("accepted %.60s", msg)
		}
	}
	if len(c.Subnets()) != 0 || got.n != 0 {
		t.Fatalf("invalid events changed the subnets: %v", c.Subnets())
	}
	if n := metrictest.Value(t, reg, "rackplane_region_subnet_events_total", map[string]string{"outcome": "invalid"}); n != 3 {
		t.Fatalf("invalid counted %v times, want 3", n)
	}
}

// TestSyncAtStart: at start the rack asks the region for its subnets as
// they are now and serves those, whatever its cache held, even when the
// region stream no longer has the events that made them.
func TestSyncAtStart(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	schemas, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	current := uuid.NewString()
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, time.Second)
	defer srv.Close()
	if err := srv.Handle(events.RegionRPCWildcard(events.MethodSubnets), events.RegionQueue, func(_ context.Context, data []byte) (any, error) {
		if err := schemas.ValidateJSON(subnets.RequestSchema, data); err != nil {
			t.Errorf("rack's request breaks its schema: %v", err)
		}
		var req events.SubnetsRequest
		_ = json.Unmarshal(data, &req)
		if req.RackID != rackID {
			return events.SubnetsReply{Subnets: []events.SubnetSet{}}, nil
		}
		return events.SubnetsReply{Subnets: []events.SubnetSet{{SubnetID: current, RackID: rackID, Subnet: subnet("10.50.0.0/24", "10.50.0.5")}}}, nil
	}); err != nil {
		t.Fatal(err)
	}

	// A cache from before: one subnet the region has deleted since.
	dir := t.TempDir()
	stale := uuid.NewString()
	old, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Apply(regionEvent(t, events.TypeSubnetSet, stale, events.SubnetSet{SubnetID: stale, RackID: rackID, Subnet: subnet("10.60.0.0/24", "")}), 3); err != nil {
		t.Fatal(err)
	}

	var got changes
	c, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir, NATS: nc, OnChange: got.record})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "the region's subnets in place of the cached one", func() bool { return slices.Equal(got.cidrs(), []string{"10.50.0.0/24"}) })
	cancel()
	<-done
	// And they are what a restart starts from.
	again, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if ss := again.Subnets(); len(ss) != 1 || ss[0].CIDR.String() != "10.50.0.0/24" {
		t.Fatalf("cached after the sync: %+v", ss)
	}
}

// TestSyncSkipsHistory: a rack that restarts with a cache far behind the
// region stream serves the region's subnets as they are now, and nothing
// in between: the history the answer at start already has (a
// reservation changed since, a subnet created and deleted since) is not
// served again. A subnet created once the rack runs is served.
func TestSyncSkipsHistory(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc, js, publish := regionBus(ctx, t)
	a, b, c := uuid.NewString(), uuid.NewString(), uuid.NewString()
	setA1 := regionEvent(t, events.TypeSubnetSet, a, events.SubnetSet{SubnetID: a, RackID: rackID, Subnet: subnet("10.20.0.0/24", "10.20.0.10")})
	a2 := events.SubnetSet{SubnetID: a, RackID: rackID, Subnet: subnet("10.20.0.0/24", "10.20.0.20")}
	first := publish(setA1)
	publish(regionEvent(t, events.TypeSubnetSet, b, events.SubnetSet{SubnetID: b, RackID: rackID, Subnet: subnet("10.21.0.0/24", "")}))
	publish(regionEvent(t, events.TypeSubnetSet, a, a2))
	publish(regionEvent(t, events.TypeSubnetDeleted, b, events.SubnetDeleted{SubnetID: b, RackID: rackID}))

	// The region answers with what it has now: a as changed, no b.
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, time.Second)
	defer srv.Close()
	if err := srv.Handle(events.RegionRPCWildcard(events.MethodSubnets), events.RegionQueue, func(context.Context, []byte) (any, error) {
		return events.SubnetsReply{Subnets: []events.SubnetSet{a2}}, nil
	}); err != nil {
		t.Fatal(err)
	}

	// The cache of a rack that stopped after the first event.
	dir := t.TempDir()
	old, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Apply(setA1, first); err != nil {
		t.Fatal(err)
	}

	// Every set of subnets served, as "cidr@reserved ...".
	var mu sync.Mutex
	var served []string
	record := func(list []events.Subnet) {
		var parts []string
		for _, s := range list {
			p := s.CIDR.String()
			if len(s.Reservations) > 0 {
				p += "@" + s.Reservations[0].IP.String()
			}
			parts = append(parts, p)
		}
		slices.Sort(parts)
		mu.Lock()
		served = append(served, strings.Join(parts, " "))
		mu.Unlock()
	}
	cache, err := subnets.New(subnets.Config{RackID: rackID, DataDir: dir, JetStream: js, NATS: nc, OnChange: record})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()
	const cached, now, withC = "10.20.0.0/24@10.20.0.10", "10.20.0.0/24@10.20.0.20", "10.20.0.0/24@10.20.0.20 10.22.0.0/24"
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(served) == 0 {
			return ""
		}
		return served[len(served)-1]
	}
	waitFor(t, "the region's subnets of now", func() bool { return last() == now })
	// A subnet created now is served; the stream is read in order, so
	// once it is, everything before it has been read too.
	publish(regionEvent(t, events.TypeSubnetSet, c, events.SubnetSet{SubnetID: c, RackID: rackID, Subnet: subnet("10.22.0.0/24", "")}))
	waitFor(t, "the subnet created once the rack runs", func() bool { return last() == withC })
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if want := []string{cached, now, withC}; !slices.Equal(served, want) {
		t.Fatalf("served, in order:\n%s\nwant:\n%s", strings.Join(served, "\n"), strings.Join(want, "\n"))
	}
}
