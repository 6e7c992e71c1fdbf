package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestOutboxTwoRelays runs two relays on one outbox at once, as two region
// instances do: every event is published exactly once, and one whose
// publish failed stays for the next pass.
func TestOutboxTwoRelays(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	const n = 600
	for i := 0; i < n; i += 50 {
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			for j := 0; j < 50; j++ {
				rack := uuid.NewString()
				hb := time.Now().UTC().Truncate(time.Microsecond)
				e, _ := events.New(events.RegionSource, events.TypeRackOffline, events.RackStreamName(rack), time.Now(),
					events.RackLiveness{RackID: rack, LastHeartbeat: &hb})
				if _, err := db.Emit(ctx, tx, e.Subject, postgres.ExpectNoStream, e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	published := map[string]int{}
	failOnce := true
	publish := func(_ context.Context, evs []events.Event) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if failOnce {
			failOnce = false
			return nil, errors.New("NATS is away")
		}
		var ids []string
		for _, e := range evs {
			published[e.ID]++
			ids = append(ids, e.ID)
		}
		time.Sleep(2 * time.Millisecond) // hold the claim while the other relay runs
		return ids, nil
	}
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k, err := db.RelayOutbox(ctx, 40, publish)
				if err != nil {
					continue // the failed pass: try again
				}
				if k == 0 {
					if l, _ := db.OutboxLength(ctx); l == 0 {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if len(published) != n {
		t.Fatalf("published %d distinct events, want %d", len(published), n)
	}
	for id, c := range published {
		if c != 1 {
			t.Fatalf("event %s published %d times", id, c)
		}
	}
}

// TestOutboxRelayReportsThePublishError: a pass whose publish fails for
// every event returns that error, wrapped (it once came out as
// "relay: publish: %!w(<nil>)"), and leaves the events queued.
func TestOutboxRelayReportsThePublishError(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		for range 2 {
			rack := uuid.NewString()
			e, _ := events.New(events.RegionSource, events.TypeRackOffline, events.RackStreamName(rack), time.Now(),
				events.RackLiveness{RackID: rack, Reason: "test"})
			if _, err := db.Emit(ctx, tx, e.Subject, postgres.ExpectNoStream, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	away := errors.New("nats: no response from stream")
	n, err := db.RelayOutbox(ctx, 10, func(context.Context, []events.Event) ([]string, error) { return nil, away })
	if n != 0 || !errors.Is(err, away) || err.Error() != "relay: publish: "+away.Error() {
		t.Fatalf("RelayOutbox: %d, %v; want 0 and relay: publish: %v", n, err, away)
	}
	if l, err := db.OutboxLength(ctx); err != nil || l != 2 {
		t.Fatalf("outbox holds %d (%v), want 2", l, err)
	}
}
