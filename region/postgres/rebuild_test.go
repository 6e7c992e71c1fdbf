package postgres_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// appendLive appends evs as the region does, a few per transaction, so
// that the projections are those of live application.
func appendLive(t *testing.T, db *postgres.DB, evs []events.Event) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(evs); i += 20 {
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, evs[i:min(i+20, len(evs))])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// dumpProjections returns every projection table's rows, in a stable
// order (json columns have no ordering of their own, their text has).
func dumpProjections(t *testing.T, db *postgres.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range postgres.ProjectionTables(db) {
		var s string
		err := db.Pool().QueryRow(context.Background(),
			`SELECT coalesce(json_agg(t ORDER BY t::text)::text, '') FROM `+table+` t`).Scan(&s)
		if err != nil {
			t.Fatal(err)
		}
		out[table] = s
	}
	return out
}

func sameProjections(t *testing.T, live, rebuilt map[string]string) {
	t.Helper()
	for table, want := range live {
		if got := rebuilt[table]; got != want {
			t.Errorf("%s differs after the rebuild:\nlive    %.2000s\nrebuilt %.2000s", table, want, got)
		}
	}
}

// A rebuild cancelled midway leaves its checkpoint; the next one resumes
// from it, takes in what was appended meanwhile, and ends with every
// projection as live application left it.
func TestRebuildResumedFromCheckpointEqualsLive(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	g := newEventGen(7, 3, 30)
	evs := g.all(2400)
	appendLive(t, db, evs[:2000])

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := 0
	_, err := db.RebuildProjectionsWith(cctx, postgres.RebuildOptions{ChunkEvents: 300, Progress: func(p postgres.RebuildProgress) {
		if chunks++; chunks == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled rebuild returned %v", err)
	}
	// The region goes on appending; the rebuild takes these in at its swap.
	appendLive(t, db, evs[2000:])
	live := dumpProjections(t, db)
	for table, rows := range live {
		if rows == "" && table != "rack_images" && table != "rack_capabilities" && table != "preseed_versions" &&
			table != "preseeds" && table != "volumes" && table != "machine_hardware_history" && table != "machine_hardware" &&
			table != "commissioning_script_results" && table != "commissioning_scripts" {
			t.Errorf("the generated log left %s empty: the test proves less than it says", table)
		}
	}

	var first *postgres.RebuildProgress
	n, err := db.RebuildProjectionsWith(ctx, postgres.RebuildOptions{ChunkEvents: 300, Progress: func(p postgres.RebuildProgress) {
		if first == nil {
			first = &p
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if first == nil || first.Resumed != 900 || first.Total != 2000 {
		t.Fatalf("resumed rebuild's first progress %+v, want 900 of 2000 resumed", first)
	}
	if n != 2400 {
		t.Fatalf("rebuild replayed %d events, want 2400", n)
	}
	sameProjections(t, live, dumpProjections(t, db))

	// Again, from scratch: a rebuild is idempotent.
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	sameProjections(t, live, dumpProjections(t, db))
}

// A rebuild runs beside a region that goes on appending: the events
// appended during the replay are taken in at the swap, those after it are
// projected live on the rebuilt tables, and the projections end as those
// of a region that only ever applied the same events live.
func TestRebuildBesideAppendsEqualsLive(t *testing.T) {
	if testing.Short() {
		t.Skip("appends 5,000 events live")
	}
	ctx := context.Background()
	evs := newEventGen(11, 3, 30).all(3000)
	ref := regiontest.DB(t)
	appendLive(t, ref, evs)

	db := regiontest.DB(t)
	appendLive(t, db, evs[:2000])
	started := make(chan struct{})
	done := make(chan error, 1)
	var n int64
	go func() {
		var once bool
		var err error
		n, err = db.RebuildProjectionsWith(ctx, postgres.RebuildOptions{ChunkEvents: 200, Progress: func(postgres.RebuildProgress) {
			if !once {
				once = true
				close(started)
			}
		}})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("rebuild ended before it began replaying: %v", err)
	}
	appendLive(t, db, evs[2000:])
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("the rebuild replayed %d events, %d of them appended during its replay", n, n-2000)
	sameProjections(t, dumpProjections(t, ref), dumpProjections(t, db))
}
