package region_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/regiontest"
)

// BenchmarkIngest measures rack publish → committed in Postgres: racks
// publish b.N events through their publishers, and the clock stops when the
// last one is in the log. events/s is the figure.
func BenchmarkIngest(b *testing.B) {
	for _, racks := range []int{1, 10} {
		b.Run(fmt.Sprintf("racks%d", racks), func(b *testing.B) {
			ns := natsserver.StartTest(b)
			pool := pgtest.NewPool(b)
			rctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			js := startBenchRegion(rctx, b, ns.Connect, pool)
			pubs := make([]*eventbus.Publisher, racks)
			ids := make([]string, racks)
			for i := range pubs {
				ids[i] = uuid.NewString()
				pubs[i] = eventbus.NewPublisher(js, eventbus.PublisherConfig{Source: events.RackSource(ids[i]), Subject: events.RackStreamName(ids[i]), Buffer: b.N + 1})
				go pubs[i].Run(rctx)
			}
			evs := make([]events.Event, b.N)
			for i := range evs {
				id := ids[i%racks]
				evs[i], _ = events.New(events.RackSource(id), events.TypeEventsDropped, events.RackStreamName(id), time.Now(),
					events.EventsDropped{Count: 1, Since: time.Now().UTC()})
			}
			b.ResetTimer()
			start := time.Now()
			for i, e := range evs {
				pubs[i%racks].Publish(e)
			}
			waitCount(b, pool, b.N)
			elapsed := time.Since(start)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
		})
	}
}

func waitCount(b *testing.B, pool *pgxpool.Pool, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var got int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM events WHERE type = $1`, events.TypeEventsDropped).Scan(&got); err != nil {
			b.Fatal(err)
		}
		if got >= n {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("events did not all arrive")
}

// startBenchRegion runs a region on pool and ns until ctx ends, and
// returns a JetStream context once the region has made the rack event
// stream. The racks of the benchmarks are publishers on an open server:
// what is measured is ingest, not the NATS auth callout.
func startBenchRegion(ctx context.Context, b *testing.B, connect func() *nats.Conn, pool *pgxpool.Pool) jetstream.JetStream {
	b.Helper()
	cfg := region.DefaultConfig()
	cfg.Secrets.KeyFile = regiontest.KeyFile(b)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NoNATSCallout = true
	return startBenchRegionConfig(ctx, b, connect, pool, cfg)
}

// startBenchRegionConfig is startBenchRegion with cfg.
func startBenchRegionConfig(ctx context.Context, b *testing.B, connect func() *nats.Conn, pool *pgxpool.Pool, cfg region.Config) jetstream.JetStream {
	b.Helper()
	r, err := region.New(cfg, pool, connect(), nil, testLogger())
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	// Run returns when its goroutines are done: the benchmark's end waits
	// for it, so that nothing of this region outlives its database.
	b.Cleanup(func() { <-done })
	js, err := jetstream.New(connect())
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := js.Stream(ctx, events.RackStream); err == nil {
			return js
		}
		time.Sleep(10 * time.Millisecond)
	}
}
