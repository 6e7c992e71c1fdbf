package bootconfig_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/schema"
)

const rackID = "0190b6a4-1c2d-7e3f-8a9b-0c1d2e3f4a5b"

// regionEvent is a region event as the region publishes it: a boot
// decision that names no rack is this rack's (the region names the rack
// each decision is for, and it travels on that rack's subject alone).
func regionEvent(t *testing.T, typ string, data any) *nats.Msg {
	t.Helper()
	switch d := data.(type) {
	case events.BootDecision:
		if d.RackID == "" {
			d.RackID = rackID
		}
		data = d
	case events.BootDecisionCleared:
		if d.RackID == "" {
			d.RackID = rackID
		}
		data = d
	}
	e, err := events.New(events.RegionSource, typ, "machine/m", time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := eventbus.Message(e)
	if err != nil {
		t.Fatal(err)
	}
	return m
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

func TestCacheFollowsRegion(t *testing.T) {
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
	schemas, err := schema.Default()
	if err != nil {
		t.Fatal(err)
	}
	// The region: answers boot_decision rpc for one MAC only.
	var rpcCalls atomic.Int64
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, time.Second)
	onRPC := events.BootDecision{MAC: "52:54:00:00:00:02", MachineID: "m-2", Purpose: events.BootPurposeLocal}
	if err := srv.Handle(events.RegionRPCWildcard("boot_decision"), events.RegionQueue, func(_ context.Context, data []byte) (any, error) {
		if err := schemas.ValidateJSON(bootconfig.BootDecisionRequestSchema, data); err != nil {
			t.Errorf("rack's request breaks its schema: %v", err)
		}
		var req events.BootDecisionRequest
		if err := json.Unmarshal(data, &req); err != nil {
			return nil, rackplane.Errorf(rackplane.EINVALID, "bad request")
		}
		rpcCalls.Add(1)
		if req.MAC == onRPC.MAC && req.RackID == rackID {
			return events.BootDecisionReply{Decision: &onRPC}, nil
		}
		return events.BootDecisionReply{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := eventbus.ServeFollow(srv, js); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	now := time.Now()
	clock := func() time.Time { return now }
	// The hooks see every decision taken in, from the stream or an rpc,
	// and every clear, after the cache has it.
	var hookMu sync.Mutex
	var hooked []string
	hook := func(s string) { hookMu.Lock(); hooked = append(hooked, s); hookMu.Unlock() }
	hooks := func() string { hookMu.Lock(); defer hookMu.Unlock(); return strings.Join(hooked, ", ") }
	var cache *bootconfig.Cache
	cache, err = bootconfig.NewCache(bootconfig.CacheConfig{RackID: rackID, DataDir: dir, Now: clock,
		OnDecision: func(d events.BootDecision) {
			if _, ok := cache.Decisions()[d.MAC]; !ok {
				t.Errorf("hook told of %s before the cache had it", d.MAC)
			}
			hook("set " + d.MAC + " " + d.MachineID + " " + d.Purpose)
		},
		OnCleared: func(cl events.BootDecisionCleared) { hook("cleared " + cl.MAC) },
	}, nc, js, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cache.Run(ctx) }()

	// Another rack's decision never reaches this one: it is on that
	// rack's subject, which this rack's consumer does not read.
	other := events.BootDecision{MAC: "52:54:00:00:00:0a", MachineID: "m-10", Purpose: events.BootPurposeInstall, RackID: "0190b6a4-1c2d-7e3f-8a9b-0c1d2e3f4aff"}
	if _, err := js.PublishMsg(ctx, regionEvent(t, events.TypeBootDecisionSet, other)); err != nil {
		t.Fatal(err)
	}
	d1 := events.BootDecision{MAC: "52:54:00:00:00:01", MachineID: "m-1", Purpose: events.BootPurposeInstall, Kernel: "k", Initrd: "i", Params: []string{"a=1"}}
	if _, err := js.PublishMsg(ctx, regionEvent(t, events.TypeBootDecisionSet, d1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "decision from the stream", func() bool { return cache.Len() == 1 })
	if _, ok := cache.Cached(other.MAC); ok {
		t.Fatal("the rack cached another rack's boot decision")
	}
	got, ok := cache.Lookup(ctx, "52:54:00:00:00:01")
	if !ok || got.MachineID != "m-1" || got.MAC != "52:54:00:00:00:01" {
		t.Fatalf("lookup m-1: %+v %v", got, ok)
	}
	if got, ok := cache.Lookup(ctx, onRPC.MAC); !ok || got.MachineID != "m-2" {
		t.Fatalf("lookup over rpc: %+v %v", got, ok)
	}
	if _, ok := cache.Lookup(ctx, "52:54:00:00:00:03"); ok {
		t.Fatal("unknown MAC found")
	}
	calls := rpcCalls.Load()
	if _, ok := cache.Lookup(ctx, "52:54:00:00:00:03"); ok || rpcCalls.Load() != calls {
		t.Fatalf("negative cache not used: %d rpc calls, was %d", rpcCalls.Load(), calls)
	}
	now = now.Add(time.Minute)
	cache.Lookup(ctx, "52:54:00:00:00:03")
	if rpcCalls.Load() != calls+1 {
		t.Fatalf("negative entry did not expire")
	}

	if _, err := js.PublishMsg(ctx, regionEvent(t, events.TypeBootDecisionCleared, events.BootDecisionCleared{MAC: "52:54:00:00:00:01"})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "clear", func() bool { return cache.Len() == 1 })
	if got, want := hooks(), "set 52:54:00:00:00:01 m-1 install, set 52:54:00:00:00:02 m-2 local, cleared 52:54:00:00:00:01"; got != want {
		t.Fatalf("hooks saw %q, want %q", got, want)
	}

	// With the region and NATS gone, a new cache from the same directory
	// still knows what the old one learnt, and resumes after its sequence.
	ns.Stop()
	start := time.Now()
	if _, ok := cache.Lookup(ctx, "52:54:00:00:00:09"); ok {
		t.Fatal("unknown MAC found while the region is away")
	}
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("lookup with the region away took %s", waited)
	}
	cancel()
	<-done
	restarted, err := bootconfig.NewCache(bootconfig.CacheConfig{RackID: rackID, DataDir: dir}, nil, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := restarted.Lookup(context.Background(), onRPC.MAC); !ok || got.MachineID != "m-2" {
		t.Fatalf("after restart: %+v %v", got, ok)
	}
	if _, ok := restarted.Lookup(context.Background(), "52:54:00:00:00:01"); ok {
		t.Fatal("cleared decision came back after restart")
	}
}

// TestUnknownMACsBounded: boot requests for 5,000 MACs the region does not
// know leave at most 4,096 remembered as unknown, the newest among them.
func TestUnknownMACsBounded(t *testing.T) {
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	var calls atomic.Int64
	srv := rpc.NewServer(nc, "region", slog.New(slog.DiscardHandler), 4, time.Second)
	if err := srv.Handle(events.RegionRPCWildcard(events.MethodBootDecision), events.RegionQueue, func(context.Context, []byte) (any, error) {
		calls.Add(1)
		return events.BootDecisionReply{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	reg := prometheus.NewRegistry()
	cache, err := bootconfig.NewCache(bootconfig.CacheConfig{RackID: rackID, DataDir: t.TempDir()}, nc, nil, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mac := func(i int) string { return fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&255, i>>8&255, i&255) }
	for i := range 5000 {
		if _, ok := cache.Lookup(ctx, mac(i)); ok {
			t.Fatalf("%s found", mac(i))
		}
	}
	if got := metrictest.Value(t, reg, "rackplane_boot_decision_unknown_macs", nil); got > 4096 || got < 1 {
		t.Fatalf("%g MACs remembered as unknown after 5000, want 1 to 4096", got)
	}
	before := calls.Load()
	cache.Lookup(ctx, mac(4999))
	if calls.Load() != before {
		t.Fatal("the newest unknown MAC was asked about again")
	}
}
