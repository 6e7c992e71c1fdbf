package capabilities_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/rpc"
	"github.com/rackplane/rackplane/rack/capabilities"
	"github.com/rackplane/rackplane/rack/images"
)

// staticImages is an image store's answer, fixed: each rack of the
// benchmark describes a few OSes with a realistic number of versions.
type staticImages images.Capabilities

func (s staticImages) Capabilities() images.Capabilities { return images.Capabilities(s) }

func someImages(n int) staticImages {
	c := images.Capabilities{OS: map[string]map[string]map[string][]images.CapabilityVersion{}}
	for _, rel := range []string{"focal", "jammy", "noble"} {
		if c.OS["ubuntu"] == nil {
			c.OS["ubuntu"] = map[string]map[string][]images.CapabilityVersion{}
		}
		c.OS["ubuntu"][rel] = map[string][]images.CapabilityVersion{}
		for _, arch := range []string{"amd64/generic", "arm64/generic"} {
			for v := 0; v < 2; v++ {
				c.OS["ubuntu"][rel][arch] = append(c.OS["ubuntu"][rel][arch], images.CapabilityVersion{
					ID: fmt.Sprintf("ubuntu/%s/%s/stable/2026110%d", arch, rel, v), Label: "stable", Version: fmt.Sprintf("2026110%d", v),
					Files: []images.File{{Name: "linux", SHA256: fmt.Sprintf("%064x", n), Size: 14 << 20}, {Name: "initrd", SHA256: fmt.Sprintf("%064x", n+1), Size: 60 << 20}},
				})
			}
		}
	}
	return staticImages(c)
}

// BenchmarkScatterGather100Racks asks 100 racks, each on its own NATS
// connection, for their capabilities at once, and reports the time until
// all answered: p50 and p99 in milliseconds.
func BenchmarkScatterGather100Racks(b *testing.B) {
	const racks = 100
	ns := natsserver.StartTest(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ids := make([]string, racks)
	for i := range ids {
		ids[i] = uuid.NewString()
		nc, err := nats.Connect(ns.URL)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		rep := capabilities.New(capabilities.Config{RackID: ids[i], Images: someImages(i), Logger: log})
		srv := rpc.NewServer(nc, ids[i], log, 8, time.Second)
		if err := rep.RegisterRPC(srv, ids[i]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(srv.Close)
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	nc := ns.Connect()
	ask := make(map[string]string, len(ids))
	for _, id := range ids {
		ask[id] = events.RackRPCSubject(id, events.MethodCapabilities)
	}
	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		g, err := rpc.Gather(ctx, nc, ask, struct{}{})
		cancel()
		if err != nil || !g.Complete {
			b.Fatalf("gather: complete=%v replies=%d err=%v", g.Complete, len(g.Replies), err)
		}
		times = append(times, g.Elapsed)
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	pct := func(p float64) float64 {
		return float64(times[min(len(times)-1, int(p*float64(len(times))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
}
