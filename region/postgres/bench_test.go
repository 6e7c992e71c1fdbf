package postgres_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// BenchmarkAppend measures appends to the log, one event per transaction
// and in batches, with the racks projection applied. Run with
// -bench Append -benchtime 5000x; the figure that matters is events/s.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 10, 100, 500} {
		b.Run(map[int]string{1: "single", 10: "batch10", 100: "batch100", 500: "batch500"}[size], func(b *testing.B) {
			ctx := context.Background()
			db := regiontest.DB(b)
			racks := make([]string, 8)
			for i := range racks {
				racks[i] = uuid.NewString()
			}
			batch := make([]events.Event, size)
			b.ResetTimer()
			n := 0
			start := time.Now()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := range batch {
					batch[j] = regiontest.RackEvent(b, racks[(i+j)%len(racks)], events.TypeEventsDropped,
						events.EventsDropped{Count: 1, Since: time.Now().UTC()})
				}
				b.StartTimer()
				err := db.InTx(ctx, func(tx pgx.Tx) error {
					_, err := db.AppendAny(ctx, tx, batch)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				n += size
			}
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkAppendExpectedVersion measures the optimistic-concurrency path
// the region uses for its own events.
func BenchmarkAppendExpectedVersion(b *testing.B) {
	ctx := context.Background()
	db := regiontest.DB(b)
	rack := uuid.NewString()
	stream := events.RackStreamName(rack)
	version := postgres.ExpectNoStream
	start := time.Now()
	for i := 0; i < b.N; i++ {
		e := regiontest.RackEvent(b, rack, events.TypeEventsDropped, events.EventsDropped{Count: 1, Since: time.Now().UTC()})
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			a, err := db.Append(ctx, tx, stream, version, e)
			if err == nil {
				version = a[0].Version
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkConcurrentAppend compares the two ways DESIGN.md names of
// keeping followers from skipping late commits, with 8 concurrent writers
// appending one event per transaction: "xid8" is what the store does
// (appends run in parallel; readers stay below the oldest running
// transaction), "serialised" takes one advisory lock per append so that
// positions commit in order.
func BenchmarkConcurrentAppend(b *testing.B) {
	for _, mode := range []string{"xid8", "serialised"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			db := regiontest.DB(b)
			const writers = 8
			per := b.N/writers + 1
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rack := uuid.NewString()
					for i := 0; i < per; i++ {
						e := regiontest.RackEvent(b, rack, events.TypeEventsDropped, events.EventsDropped{Count: 1, Since: time.Now().UTC()})
						err := db.InTx(ctx, func(tx pgx.Tx) error {
							if mode == "serialised" {
								if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(4242)`); err != nil {
									return err
								}
							}
							_, err := db.AppendAny(ctx, tx, []events.Event{e})
							return err
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*writers)/time.Since(start).Seconds(), "events/s")
		})
	}
}
