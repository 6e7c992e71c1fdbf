package simrack_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/internal/simrack"
)

// TestEventsFollowTheContract boots two machines (one the region knows,
// one it does not) on a virtual rack whose rate lets only part of their
// requests be reported one by one, and checks that every message it sent
// passes the schemas and that the rest went into a summary: what a
// benchmark measures is the region's work on a rack's real traffic.
func TestEventsFollowTheContract(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := eventbus.EnsureStreams(ctx, js, time.Hour); err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	beats := make(chan int64, 10)
	r, err := simrack.Start(ctx, simrack.Config{NATSURL: ns.URL, ID: id, Name: "sim-0", NoFollow: true,
		HeartbeatInterval: 100 * time.Millisecond, DHCPInterval: 200 * time.Millisecond, SummaryInterval: 500 * time.Millisecond,
		EventRate: 0.001, EventBurst: 5,
		Beat: func(seq int64, _ time.Time) {
			select {
			case beats <- seq:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Wait()
	defer cancel()

	var info struct {
		ID string `json:"id"`
	}
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(id, "info"), struct{}{}, &info); err != nil || info.ID != id {
		t.Fatalf("info: %+v %v", info, err)
	}
	var caps events.Capabilities
	if err := rpc.Call(ctx, nc, events.RackRPCSubject(id, "capabilities"), struct{}{}, &caps); err != nil || caps.Digest == "" {
		t.Fatalf("capabilities: %+v %v", caps, err)
	}

	hb, err := nc.SubscribeSync(events.HeartbeatSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	r.Boot(simrack.Machine{ID: uuid.NewString(), MAC: "52:54:00:00:00:01", IP: netip.MustParseAddr("10.0.0.1")})
	r.Boot(simrack.Machine{MAC: "52:54:00:00:00:02", IP: netip.MustParseAddr("10.0.0.2")})
	m, err := hb.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := v.Decode(m.Data); err != nil || e.Type != events.TypeHeartbeat {
		t.Fatalf("heartbeat: %v %v", e.Type, err)
	}
	<-beats

	want := map[string]bool{events.TypeRackRegistered: false, events.TypeCapabilitiesReported: false,
		events.TypeBootHandoff: false, events.TypeBootTransfer: false, events.TypeDHCPLeasesChanged: false,
		events.TypeBootRequestsSummarized: false}
	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for missing := len(want); missing > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("events seen: %v", want)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			continue
		}
		e, err := v.Decode(msg.Data())
		if err != nil {
			t.Fatalf("%s: %v\n%s", msg.Subject(), err, msg.Data())
		}
		if events.RackIDFromSubject(msg.Subject()) != id || events.RackIDFromSource(e.Source) != id {
			t.Fatalf("event %s on %s from %s", e.Type, msg.Subject(), e.Source)
		}
		if seen, ok := want[e.Type]; ok && !seen {
			want[e.Type] = true
			missing--
		}
	}
	// The boots' last requests come seconds after they began.
	for end := time.Now().Add(10 * time.Second); r.Stats().Summarized < 3 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	if s := r.Stats(); s.Boots != 2 || s.Summarized != 8-5 || s.RPCs != 2 {
		t.Errorf("stats %+v: want 2 boots, 3 requests summarized, 2 rpcs", s)
	}
}
