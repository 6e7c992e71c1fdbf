package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
)

// TestRegionKilledWhileRacksPublish kills regiond with SIGKILL twice while
// racks publish, restarts it, and checks that every rack event is in the
// log exactly once.
func TestRegionKilledWhileRacksPublish(t *testing.T) {
	endToEnd(t)
	ctx := context.Background()
	ns := natsserver.StartTest(t)
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	regionArgs := []string{"-no-nats-callout", "-nats-url", ns.URL, "-database-url", dbURL, "-http-addr", freeAddr(t), "-ingest-batch", "200"}
	region := start(t, "regiond", regionArgs...)

	const racks, perRack = 4, 3000
	want := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < racks; i++ {
		id := uuid.NewString()
		var evs []events.Event
		for j := 0; j < perRack; j++ {
			e, err := events.New(events.RackSource(id), events.TypeRackRegistered, events.RackStreamName(id), time.Now(),
				events.RackRegistered{Name: fmt.Sprintf("rack-%d", i), Version: fmt.Sprint(j), StartedAt: time.Now().UTC()})
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, e)
			want[e.ID] = true
		}
		g.Go(func() error {
			js, err := jetstream.New(ns.Connect())
			if err != nil {
				return err
			}
			p := eventbus.NewPublisher(js, eventbus.PublisherConfig{Source: events.RackSource(id), Subject: events.RackStreamName(id), Buffer: perRack * 2})
			pctx, cancel := context.WithCancel(gctx)
			defer cancel()
			go p.Run(pctx)
			for j, e := range evs {
				p.Publish(e)
				if j%100 == 0 {
					time.Sleep(5 * time.Millisecond) // a steady stream, not one burst
				}
			}
			fctx, fcancel := context.WithTimeout(gctx, time.Minute)
			defer fcancel()
			return p.Flush(fctx)
		})
	}
	count := func() int {
		var n int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = $1`, events.TypeRackRegistered).Scan(&n)
		return n
	}
	// Kill it twice mid-stream.
	for kill := 1; kill <= 2; kill++ {
		target := kill * racks * perRack / 3
		eventually(t, 60*time.Second, "ingest progressing", func() error {
			if n := count(); n < target {
				return fmt.Errorf("%d events in the log", n)
			}
			return nil
		})
		region.Kill()
		t.Logf("killed regiond with %d of %d events in the log", count(), len(want))
		region = start(t, "regiond", regionArgs...)
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "every event in the log", func() error {
		if n := count(); n != len(want) {
			return fmt.Errorf("%d events in the log, want %d", n, len(want))
		}
		return nil
	})
	rows, err := pool.Query(ctx, `SELECT id::text, count(*) FROM events WHERE type = $1 GROUP BY id`, events.TypeRackRegistered)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		if !want[id] || n != 1 {
			t.Fatalf("event %s: in the log %d times, published: %v", id, n, want[id])
		}
		seen++
	}
	if seen != len(want) {
		t.Fatalf("%d distinct events, want %d", seen, len(want))
	}
}
