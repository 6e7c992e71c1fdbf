package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestTelemetryTypesAreTheDatabases: the database lets a pruning
// transaction delete rows of exactly postgres.TelemetryTypes, refuses
// every other UPDATE or DELETE, and its indexes for pruning cover the
// same types.
func TestTelemetryTypesAreTheDatabases(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rack := uuid.NewString()
	telemetry := map[string]bool{}
	var evs []events.Event
	for _, typ := range postgres.TelemetryTypes {
		telemetry[typ] = true
		evs = append(evs, regiontest.RackEvent(t, rack, typ, map[string]any{}))
	}
	state := registered(t, rack, "r1")
	evs = append(evs, state)
	append1(t, db, evs...)

	del := func(prune bool, id string) error {
		return pgx.BeginFunc(ctx, db.Pool(), func(tx pgx.Tx) error {
			if prune {
				if _, err := tx.Exec(ctx, `SET LOCAL rackplane.prune_telemetry = 'on'`); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `DELETE FROM events WHERE id = $1`, id)
			return err
		})
	}
	for _, e := range evs {
		if err := del(false, e.ID); err == nil {
			t.Errorf("%s deleted by a transaction that does not prune", e.Type)
		}
		err := del(true, e.ID)
		if telemetry[e.Type] != (err == nil) {
			t.Errorf("%s: pruning it: %v", e.Type, err)
		}
	}
	if _, err := db.Pool().Exec(ctx, `UPDATE events SET data = '{}' WHERE id = $1`, state.ID); err == nil {
		t.Error("an UPDATE of the log went through")
	}
	// The database's list is the Go one.
	rows, err := db.Pool().Query(ctx, `SELECT t FROM unnest($1::text[]) t WHERE telemetry_type(t)`,
		append(append([]string{}, postgres.TelemetryTypes...), events.TypeRackRegistered, events.TypeMachineCreated, events.TypeEventsDropped))
	if err != nil {
		t.Fatal(err)
	}
	inDB, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || fmt.Sprint(inDB) != fmt.Sprint(postgres.TelemetryTypes) {
		t.Errorf("telemetry_type takes %v (%v), want %v", inDB, err, postgres.TelemetryTypes)
	}
	// And no other: it names as many types as the Go list.
	var src string
	if err := db.Pool().QueryRow(ctx, `SELECT prosrc FROM pg_proc WHERE proname = 'telemetry_type'`).Scan(&src); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(src, "'rackplane."); n != len(postgres.TelemetryTypes) {
		t.Errorf("telemetry_type names %d types, TelemetryTypes %d:\n%s", n, len(postgres.TelemetryTypes), src)
	}
}

func append1(t *testing.T, db *postgres.DB, evs ...events.Event) {
	t.Helper()
	ctx := context.Background()
	if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, evs); return err }); err != nil {
		t.Fatal(err)
	}
}

// handoffs makes n boot_handoff events of rack.
func handoffs(t *testing.T, rack string, n int) []events.Event {
	var evs []events.Event
	for i := range n {
		evs = append(evs, regiontest.RackEvent(t, rack, events.TypeBootHandoff,
			events.BootHandoff{Protocol: "tftp", FileName: fmt.Sprintf("f%d", i), Route: "not_found"}))
	}
	return evs
}

// readAll follows the log from after with ReadEvents to its end, as a
// follower does, and returns the ids read, in order.
func readAll(t *testing.T, db *postgres.DB, after postgres.Cursor) ([]string, postgres.Cursor) {
	t.Helper()
	var ids []string
	for {
		batch, next, err := db.ReadEvents(context.Background(), after, 7, postgres.ReadFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			return ids, after
		}
		for _, e := range batch {
			ids = append(ids, e.ID)
		}
		after = next
	}
}

// TestPruneTelemetry: pruning deletes only telemetry, only what every
// follower has read, keeps the newest of each rack and what is younger
// than the age, leaves region events waiting in the outbox, and a
// follower reading on from its cursor, or from the start, sees each
// remaining event once, in order; the projections rebuild from what is
// left as they were.
func TestPruneTelemetry(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	a, b := uuid.NewString(), uuid.NewString()
	append1(t, db, registered(t, a, "rack-a"), registered(t, b, "rack-b"))
	append1(t, db, handoffs(t, a, 30)...)
	append1(t, db, handoffs(t, b, 8)...)
	// A region summary still in the outbox, and one relayed.
	for range 2 {
		ev, _ := events.New(events.RegionSource, events.TypeDiscoveryRefused, events.RackStreamName(a), time.Now(),
			events.DiscoveryRefused{RackID: a, Refused: 1, ByLimit: map[string]int64{"rack_rate": 1}})
		if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.Emit(ctx, tx, ev.Subject, postgres.ExpectAny, ev); return err }); err != nil {
			t.Fatal(err)
		}
		if _, err := db.RelayOutbox(ctx, 1, func(_ context.Context, evs []events.Event) ([]string, error) { return []string{evs[0].ID}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	// The state after the first batch: the follower reads its first 20.
	ev, _ := events.New(events.RegionSource, events.TypeDiscoveryRefused, events.RackStreamName(a), time.Now(),
		events.DiscoveryRefused{RackID: a, Refused: 1, ByLimit: map[string]int64{"rack_rate": 1}})
	if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.Emit(ctx, tx, ev.Subject, postgres.ExpectAny, ev); return err }); err != nil {
		t.Fatal(err)
	}
	all, end := readAll(t, db, postgres.Cursor{})
	if len(all) != 2+30+8+3 {
		t.Fatalf("%d events in the log, want 43", len(all))
	}
	count := func() map[string]int {
		rows, err := db.Pool().Query(ctx, `SELECT type FROM events`)
		if err != nil {
			t.Fatal(err)
		}
		types, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, typ := range types {
			out[typ]++
		}
		return out
	}
	policy := postgres.RetentionPolicy{KeepPerSource: 5, Batch: 4}

	// No follower has read anything: nothing goes.
	if pruned, err := db.PruneTelemetry(ctx, policy, time.Now()); err != nil || len(pruned) != 0 {
		t.Fatalf("pruned %v (%v) with no follower cursor, want nothing", pruned, err)
	}
	// A follower has read the first 22 events (both registrations and
	// twenty of rack a's hand-offs): those of them beyond rack a's newest
	// five may go, and nothing after.
	batch, mid, err := db.ReadEvents(ctx, postgres.Cursor{}, 22, postgres.ReadFilter{})
	if err != nil || len(batch) != 22 {
		t.Fatalf("read %d: %v", len(batch), err)
	}
	if err := db.SaveCursor(ctx, "region-follower", mid); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveCursor(ctx, "a-follower-further-on", end); err != nil {
		t.Fatal(err)
	}
	pruned, err := db.PruneTelemetry(ctx, policy, time.Now())
	if err != nil || pruned[events.TypeBootHandoff] != 20 || len(pruned) != 1 {
		t.Fatalf("pruned %v (%v), want the 20 hand-offs the slowest follower read", pruned, err)
	}
	rest, _ := readAll(t, db, mid)
	if want := all[22:]; fmt.Sprint(rest) != fmt.Sprint(want) {
		t.Fatalf("read on from the follower's cursor: %d events, want the %d after it, in order", len(rest), len(want))
	}

	// Every follower has read everything: rack a keeps its newest five
	// hand-offs, rack b its newest five, the region its newest five
	// summaries (all three), the registrations stay.
	if err := db.SaveCursor(ctx, "region-follower", end); err != nil {
		t.Fatal(err)
	}
	pruned, err = db.PruneTelemetry(ctx, policy, time.Now())
	if err != nil || pruned[events.TypeBootHandoff] != 5+3 || len(pruned) != 1 {
		t.Fatalf("pruned %v (%v), want 5 of rack a's and 3 of rack b's hand-offs", pruned, err)
	}
	if got := count(); got[events.TypeBootHandoff] != 10 || got[events.TypeRackRegistered] != 2 || got[events.TypeDiscoveryRefused] != 3 {
		t.Fatalf("left %v", got)
	}
	// By age: all telemetry older than an hour, an hour and more from
	// now; but the summary waiting in the outbox stays.
	pruned, err = db.PruneTelemetry(ctx, postgres.RetentionPolicy{MaxAge: time.Hour}, time.Now().Add(2*time.Hour))
	if err != nil || pruned[events.TypeBootHandoff] != 10 || pruned[events.TypeDiscoveryRefused] != 2 {
		t.Fatalf("pruned %v (%v), want every hand-off and the relayed summaries", pruned, err)
	}
	if got := count(); len(got) != 2 || got[events.TypeRackRegistered] != 2 || got[events.TypeDiscoveryRefused] != 1 {
		t.Fatalf("left %v, want the registrations and the summary in the outbox", got)
	}
	// A reader from the start sees what is left once, in order; new
	// events come after.
	append1(t, db, handoffs(t, a, 1)...)
	left, _ := readAll(t, db, postgres.Cursor{})
	if len(left) != 4 || left[0] != all[0] || left[1] != all[1] || left[2] != all[42] {
		t.Fatalf("read from the start after pruning: %v", left)
	}
	racks, err := db.ListRacks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatalf("rebuild after pruning: %v", err)
	}
	rebuilt, err := db.ListRacks(ctx)
	if err != nil || len(rebuilt) != 2 || rebuilt[0].Name != racks[0].Name || rebuilt[1].Name != racks[1].Name {
		t.Fatalf("racks rebuilt %+v (%v), were %+v", rebuilt, err, racks)
	}
}
