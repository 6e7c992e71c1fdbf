package eventbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/journal"
)

// BenchmarkPublish publishes b.N events to an embedded JetStream and
// waits until all are acknowledged, from memory only and through the
// journal (group commit, fsync'd) side by side: events/s is the
// throughput end to end, publish/s what the caller's Publish costs.
func BenchmarkPublish(b *testing.B) {
	for _, mode := range []string{"memory", "journal"} {
		b.Run(mode, func(b *testing.B) {
			_, js := startStreams(b)
			rack := uuid.NewString()
			cfg := eventbus.PublisherConfig{Source: events.RackSource(rack), Subject: events.RackStreamName(rack), Buffer: b.N + 1}
			if mode == "journal" {
				j, err := journal.Open(journal.Config{Dir: b.TempDir(), MaxBytes: 1 << 40})
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				cfg.Journal = j
			}
			pub := eventbus.NewPublisher(js, cfg)
			evs := make([]events.Event, b.N)
			for i := range evs {
				evs[i], _ = events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
					events.RackRegistered{Name: "bench", Version: "1", StartedAt: time.Now().UTC()})
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { pub.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			b.ResetTimer()
			start := time.Now()
			for _, e := range evs {
				pub.Publish(e)
			}
			publishing := time.Since(start)
			fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer fcancel()
			if err := pub.Flush(fctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/publishing.Seconds(), "publish/s")
		})
	}
}
