package postgres_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
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

// BenchmarkEventLogHorizon compares the two ways the log's readers find
// what they may read, side by side: this database's appenders (the mark
// InTx takes; what the region uses) and the server-wide snapshot xmin
// (what the log used before). Eight writers append one event per
// transaction while a follower reads; it reports appends/s and the
// follower's lag (append to read) at p50 and p99, alone and with a
// transaction holding an id open in another database of the same server
// for as long as the writers run. DESIGN.md's other choice, appends that
// take turns ("serialized"), is measured too. Run with -bench EventLogHorizon
// -benchtime 4000x.
func BenchmarkEventLogHorizon(b *testing.B) {
	for _, mech := range []string{"appenders", "server_snapshot", "serialized"} {
		for _, stranger := range []bool{false, true} {
			name := mech + "/alone"
			if stranger {
				name = mech + "/stranger_in_another_database"
			}
			b.Run(name, func(b *testing.B) { benchHorizon(b, mech, stranger) })
		}
	}
}

func benchHorizon(b *testing.B, mech string, stranger bool) {
	ctx := context.Background()
	db := regiontest.DB(b)
	switch mech {
	case "server_snapshot":
		postgres.UseServerSnapshotHorizon(db)
	case "serialized":
		postgres.UseSerializedAppends(db)
	}
	var other pgx.Tx
	if stranger {
		pool, err := pgxpool.New(ctx, pgtest.NewDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		if other, err = pool.Begin(ctx); err != nil {
			b.Fatal(err)
		}
		defer other.Rollback(ctx)
		if _, err := other.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			b.Fatal(err)
		}
	}
	const writers = 8
	filter := postgres.ReadFilter{Types: []string{events.TypeEventsDropped}}
	lagc := make(chan []time.Duration, 1)
	stop := make(chan struct{})
	go func() {
		var cur postgres.Cursor
		lags := make([]time.Duration, 0, b.N)
		for len(lags) < b.N {
			select {
			case <-stop:
				lagc <- lags
				return
			default:
			}
			evs, next, err := db.ReadEvents(ctx, cur, 1000, filter)
			if err != nil {
				break
			}
			now := time.Now()
			for _, e := range evs {
				lags = append(lags, now.Sub(e.RecordedAt))
			}
			cur = next
			if len(evs) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		lagc <- lags
	}()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		n := b.N / writers
		if w < b.N%writers {
			n++
		}
		wg.Add(1)
		go func(rack string, n int) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				e := regiontest.RackEvent(b, rack, events.TypeEventsDropped, events.EventsDropped{Count: 1, Since: time.Now().UTC()})
				if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, []events.Event{e}); return err }); err != nil {
					errc <- err
					return
				}
			}
		}(uuid.NewString(), n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	if other != nil {
		_ = other.Rollback(ctx) // the stranger's batch job ends with the writers
	}
	// The follower gets 30s after the writers (and the stranger) are done;
	// what it has not read by then is reported, not waited for: beside a
	// stranger that stays, the server-wide snapshot reads nothing.
	timer := time.AfterFunc(30*time.Second, func() { close(stop) })
	lags := <-lagc
	timer.Stop()
	b.StopTimer()
	b.ReportMetric(float64(b.N-len(lags)), "unread")
	if len(lags) == 0 {
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
		return
	}
	slices.Sort(lags)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag_p50_ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag_p99_ms")
	b.ReportMetric(0, "ns/op")
}
