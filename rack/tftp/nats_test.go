package tftp_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/bootconfig"
	"github.com/rackplane/rackplane/rack/handoff"
	"github.com/rackplane/rackplane/rack/handoff/handofftest"
	"github.com/rackplane/rackplane/rack/tftp"
)

// tee records events (checking their schemas) and publishes them.
type tee struct {
	rec *handofftest.Recorder
	pub *eventbus.Publisher
}

func (t tee) Publish(e events.Event) { t.rec.Publish(e); t.pub.Publish(e) }

func curlGet(t *testing.T, addr, name string) (string, time.Duration) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	if b, err := exec.Command("curl", "-sS", "--max-time", "10", "-o", out, "tftp://"+addr+"/"+name).CombinedOutput(); err != nil {
		t.Fatalf("curl %s: %v\n%s", name, err, b)
	}
	took := time.Since(start)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), took
}

// TestBootingSurvivesNATSOutage kills NATS while machines boot: configs
// still come from the rack's cache, an unknown machine still gets the
// enlistment config at once, and the events of the outage reach JetStream
// after NATS returns.
func TestBootingSurvivesNATSOutage(t *testing.T) {
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
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	pub := eventbus.NewPublisher(js, eventbus.PublisherConfig{Source: events.RackSource(handofftest.RackID), Subject: events.RackStreamName(handofftest.RackID), Logger: log, Registerer: reg})
	go pub.Run(ctx)

	// The region: decision A on the stream, decision B only over rpc.
	decA := events.BootDecision{MAC: "52:54:00:aa:00:01", MachineID: "m-a", Purpose: events.BootPurposeInstall, Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", Params: []string{"token=a-525400aa0001"}, RackID: handofftest.RackID}
	decB := events.BootDecision{MAC: "52:54:00:bb:00:02", MachineID: "m-b", Purpose: events.BootPurposeInstall, Kernel: "images/debian/v1/linux", Initrd: "images/debian/v1/initrd", Params: []string{"token=b-525400bb0002"}}
	ev, _ := events.New(events.RegionSource, events.TypeBootDecisionSet, "machine/m-a", time.Now(), decA)
	msg, _ := eventbus.Message(ev)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	region := rpc.NewServer(nc, "region", log, 4, time.Second)
	defer region.Close()
	if err := region.Handle(events.RegionRPCWildcard("boot_decision"), events.RegionQueue, func(_ context.Context, data []byte) (any, error) {
		var req events.BootDecisionRequest
		json.Unmarshal(data, &req)
		if req.MAC == decB.MAC {
			return events.BootDecisionReply{Decision: &decB}, nil
		}
		return events.BootDecisionReply{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := eventbus.ServeFollow(region, js); err != nil {
		t.Fatal(err)
	}

	cache, err := bootconfig.NewCache(bootconfig.CacheConfig{RackID: handofftest.RackID, DataDir: t.TempDir()}, nc, js, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	go cache.Run(ctx)
	waitUntil := time.Now().Add(10 * time.Second)
	for cache.Len() == 0 && time.Now().Before(waitUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	rec := handofftest.NewRecorder(t)
	render, _ := bootconfig.NewRenderer(bootconfig.RenderConfig{Enlist: &events.BootDecision{Purpose: events.BootPurposeEnlist, Kernel: "images/enlist/linux", Initrd: "images/enlist/initrd", Params: []string{"enlist=yes"}}})
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "pxelinux.0"), handofftest.Pattern(200000), 0o644)
	resolver, err := handoff.NewResolver(handoff.Config{RackID: handofftest.RackID, Root: root}, cache, nil, render, tee{rec, pub}, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := start(t, resolver, tftp.Config{})

	if got, _ := curlGet(t, addr, "ipxe/52-54-00-aa-00-01.ipxe"); !strings.Contains(got, "token=a-525400aa0001") {
		t.Fatalf("A before outage: %s", got)
	}
	if got, _ := curlGet(t, addr, "ipxe/52-54-00-bb-00-02.ipxe"); !strings.Contains(got, "token=b-525400bb0002") {
		t.Fatalf("B before outage: %s", got)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	ns.Stop()
	before := len(rec.Events(events.TypeBootTransfer))
	for i := 0; i < 3; i++ {
		if got, _ := curlGet(t, addr, "ipxe/52-54-00-aa-00-01.ipxe"); !strings.Contains(got, "token=a-525400aa0001") {
			t.Fatalf("A during outage: %s", got)
		}
		if got, _ := curlGet(t, addr, "pxelinux.cfg/01-52-54-00-bb-00-02"); !strings.Contains(got, "token=b-525400bb0002") {
			t.Fatalf("B during outage: %s", got)
		}
		curlGet(t, addr, "pxelinux.0")
	}
	got, took := curlGet(t, addr, "ipxe/52-54-00-cc-00-03.ipxe")
	if !strings.Contains(got, "enlist=yes") {
		t.Fatalf("unknown machine during outage: %s", got)
	}
	t.Logf("unknown machine's config with the region away took %s", took)
	// A transfer's event follows the last acknowledgement, which may come
	// after the client has exited.
	rec.Wait(events.TypeBootTransfer, before+9, 2*time.Second, func(events.Event) bool { return true })
	outage := rec.Events(events.TypeBootTransfer)[before:]
	if len(outage) != 10 {
		t.Fatalf("%d transfer events during the outage, want 10", len(outage))
	}
	if pub.Buffered() == 0 {
		t.Fatal("no events buffered while NATS was away")
	}
	t.Logf("%d events buffered during the outage", pub.Buffered())

	ns.Restart()
	fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	// The cache follows the region again: a machine that was unknown
	// during the outage gets its own config once the region decides.
	decC := events.BootDecision{MAC: "52:54:00:cc:00:03", MachineID: "m-c", Purpose: events.BootPurposeLocal, RackID: handofftest.RackID}
	ev, _ = events.New(events.RegionSource, events.TypeBootDecisionSet, "machine/m-c", time.Now(), decC)
	msg, _ = eventbus.Message(ev)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	resumeBy := time.Now().Add(10 * time.Second)
	for cache.Len() < 3 && time.Now().Before(resumeBy) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, _ := curlGet(t, addr, "ipxe/52-54-00-cc-00-03.ipxe"); !strings.Contains(got, "machine m-c") || !strings.Contains(got, "exit") {
		t.Fatalf("C after the outage: %s", got)
	}

	cons, err := js.OrderedConsumer(ctx, events.RackStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RackEventSubject(handofftest.RackID, events.TypeBootTransfer)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, e := range outage {
		want[e.ID] = true
	}
	v, _ := events.NewValidator()
	for len(want) > 0 {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("%d outage events missing from the stream: %v", len(want), err)
		}
		e, err := v.Decode(m.Data())
		if err != nil {
			t.Fatalf("stream holds an invalid event: %v", err)
		}
		delete(want, e.ID)
	}
}
