package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane"
	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/metrictest"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

func registered(t testing.TB, rackID, name string) events.Event {
	return regiontest.RackEvent(t, rackID, events.TypeRackRegistered, events.RackRegistered{
		Name: name, Version: "test", Addresses: []string{"127.0.0.1"}, StartedAt: time.Now().UTC(),
	})
}

func TestAppendExpectedVersionAndIdempotency(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rack := uuid.NewString()
	stream := events.RackStreamName(rack)
	e1, e2 := registered(t, rack, "r1"), registered(t, rack, "r1")

	var first []postgres.Appended
	err := db.InTx(ctx, func(tx pgx.Tx) (err error) {
		first, err = db.Append(ctx, tx, stream, postgres.ExpectNoStream, e1)
		return err
	})
	if err != nil || len(first) != 1 || first[0].Version != 1 {
		t.Fatalf("first append: %v %+v", err, first)
	}

	tests := []struct {
		name     string
		expected int64
		event    events.Event
		wantCode string
		wantDup  bool
		wantVer  int64
	}{
		{"same event again is a no-op with the original position", postgres.ExpectNoStream, e1, "", true, 1},
		{"stream exists, expected none", postgres.ExpectNoStream, e2, rackplane.ECONFLICT, false, 0},
		{"stale expected version", 5, e2, rackplane.ECONFLICT, false, 0},
		{"right expected version", 1, e2, "", false, 2},
		{"any version", postgres.ExpectAny, registered(t, rack, "r1"), "", false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []postgres.Appended
			err := db.InTx(ctx, func(tx pgx.Tx) (err error) {
				got, err = db.Append(ctx, tx, stream, tt.expected, tt.event)
				return err
			})
			if tt.wantCode != "" {
				var ce *postgres.ConflictError
				if rackplane.ErrorCode(err) != tt.wantCode || !errors.As(err, &ce) {
					t.Fatalf("err = %v, want code %s with a ConflictError", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Duplicate != tt.wantDup || got[0].Version != tt.wantVer {
				t.Fatalf("got %+v, want duplicate=%v version=%d", got[0], tt.wantDup, tt.wantVer)
			}
			if tt.wantDup && got[0].Position != first[0].Position {
				t.Fatalf("duplicate position %d, original %d", got[0].Position, first[0].Position)
			}
		})
	}
	var n int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("events in log = %d (%v), want 3", n, err)
	}
}

// TestAppendOutcomeForEveryEvent: an append gives an outcome for each
// event it is handed, one it holds twice included: the event is written
// once, and the repeat is a duplicate at the same position.
func TestAppendOutcomeForEveryEvent(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rack := uuid.NewString()
	stream := events.RackStreamName(rack)
	tests := []struct {
		name   string
		append func(tx pgx.Tx, evs []events.Event) ([]postgres.Appended, error)
	}{
		{"Append", func(tx pgx.Tx, evs []events.Event) ([]postgres.Appended, error) {
			return db.Append(ctx, tx, stream, postgres.ExpectAny, evs...)
		}},
		{"AppendAny", func(tx pgx.Tx, evs []events.Event) ([]postgres.Appended, error) {
			return db.AppendAny(ctx, tx, evs)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e1, e2 := registered(t, rack, "r"), registered(t, rack, "r")
			var got []postgres.Appended
			err := db.InTx(ctx, func(tx pgx.Tx) (err error) {
				got, err = tt.append(tx, []events.Event{e1, e2, e1})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			written := map[string]postgres.Appended{}
			var dups []postgres.Appended
			for _, a := range got {
				if a.Duplicate {
					dups = append(dups, a)
				} else {
					written[a.ID] = a
				}
			}
			if len(got) != 3 || len(written) != 2 || len(dups) != 1 || dups[0].ID != e1.ID || dups[0].Position != written[e1.ID].Position {
				t.Fatalf("outcomes %+v, want e1 and e2 written and e1's repeat a duplicate of it", got)
			}
		})
	}
	var n int
	if err := db.Pool().QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("events in log = %d (%v), want 4", n, err)
	}
}

func TestEventsTableIsAppendOnly(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rack := uuid.NewString()
	err := db.InTx(ctx, func(tx pgx.Tx) error {
		_, err := db.AppendAny(ctx, tx, []events.Event{registered(t, rack, "x")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`UPDATE events SET type = 'x'`, `DELETE FROM events`, `TRUNCATE events CASCADE`} {
		if _, err := db.Pool().Exec(ctx, q); err == nil {
			t.Errorf("%s succeeded", q)
		}
	}
}

// TestFollowerSeesEveryEventOnce runs concurrent writers whose
// transactions commit out of position order, and two followers: the
// store's reader and a naive "position > cursor" one. The store's reader
// must see every event exactly once; the naive one is there to show the
// test is hard enough to make it skip.
func TestFollowerSeesEveryEventOnce(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	const writers, perWriter = 16, 150
	total := writers * perWriter

	done := make(chan struct{})
	var g errgroup.Group
	for w := 0; w < writers; w++ {
		g.Go(func() error {
			rack := uuid.NewString()
			for i := 0; i < perWriter; i++ {
				e := regiontest.RackEvent(t, rack, events.TypeEventsDropped, events.EventsDropped{Count: int64(i + 1), Since: time.Now().UTC()})
				err := db.InTx(ctx, func(tx pgx.Tx) error {
					if _, err := db.AppendAny(ctx, tx, []events.Event{e}); err != nil {
						return err
					}
					// Hold the transaction open after taking a position so
					// later positions commit first.
					time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	naiveSeen := map[string]bool{}
	var readers sync.WaitGroup
	readers.Add(2)
	go func() {
		defer readers.Done()
		var cur postgres.Cursor
		for {
			batch, next, err := db.ReadEvents(ctx, cur, 50, postgres.ReadFilter{})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			for _, e := range batch {
				seen[e.ID]++
			}
			n := len(seen)
			mu.Unlock()
			cur = next
			if n >= total {
				select {
				case <-done:
					return
				default:
				}
			}
			if len(batch) == 0 {
				select {
				case <-done:
					if n >= total {
						return
					}
				default:
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	go func() {
		defer readers.Done()
		var pos int64
		for {
			rows, err := db.Pool().Query(ctx, `SELECT id::text, position FROM events WHERE position > $1 ORDER BY position LIMIT 50`, pos)
			if err != nil {
				t.Error(err)
				return
			}
			n := 0
			for rows.Next() {
				var id string
				_ = rows.Scan(&id, &pos)
				naiveSeen[id] = true
				n++
			}
			rows.Close()
			if n == 0 {
				select {
				case <-done:
					return
				default:
				}
				time.Sleep(time.Millisecond)
			}
		}
	}()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	close(done)
	readers.Wait()

	if len(seen) != total {
		t.Fatalf("follower saw %d distinct events, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s seen %d times", id, n)
		}
	}
	skipped := total - len(naiveSeen)
	t.Logf("naive position reader skipped %d of %d events; the store's reader skipped none", skipped, total)
	if skipped == 0 {
		t.Fatalf("the naive reader skipped nothing: the test no longer produces late commits, so it proves nothing")
	}
}

func TestRebuildProjectionsReproducesThem(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	for i := 0; i < 5; i++ {
		rack := uuid.NewString()
		evs := []events.Event{registered(t, rack, fmt.Sprintf("rack-%d", i))}
		if i%2 == 0 {
			evs = append(evs, regiontest.RackEvent(t, rack, events.TypeEventsDropped, events.EventsDropped{Count: 7, Since: time.Now().UTC()}))
		}
		err := db.InTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, evs)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			hb := time.Now().UTC().Truncate(time.Microsecond)
			off, _ := events.New(events.RegionSource, events.TypeRackOffline, events.RackStreamName(rack), time.Now(),
				events.RackLiveness{RackID: rack, LastHeartbeat: &hb, Reason: "test"})
			err := db.InTx(ctx, func(tx pgx.Tx) error {
				_, err := db.Emit(ctx, tx, events.RackStreamName(rack), postgres.ExpectAny, off)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	before := dumpTable(t, db, "racks")
	n, err := db.RebuildProjections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Fatalf("replayed %d events, want 10", n)
	}
	after := dumpTable(t, db, "racks")
	if before != after {
		t.Fatalf("projection differs after rebuild:\nbefore %s\nafter  %s", before, after)
	}
	if len(before) < 100 {
		t.Fatalf("racks projection unexpectedly small: %s", before)
	}
}

func dumpTable(t *testing.T, db *postgres.DB, table string) string {
	t.Helper()
	var s string
	err := db.Pool().QueryRow(context.Background(),
		`SELECT coalesce(json_agg(t ORDER BY t)::text, '') FROM `+table+` t`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Only this database's own appends in flight hold the log back: a
// transaction with an id open in another database, or in this one without
// appending, does not; an append in flight does, and AwaitSettled waits for
// it up to its limit, past which the read stays correct, only less recent.
func TestOnlyAppendsInFlightHoldTheLogBack(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	db := postgres.New(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// A transaction that holds an id, in a pool of its own.
	holdOpen := func(p *pgxpool.Pool) pgx.Tx {
		tx, err := p.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		return tx
	}
	// An append that stays in flight until release is called.
	appendInFlight := func() (release func()) {
		started, done := make(chan struct{}), make(chan struct{})
		go func() {
			_ = db.InTx(ctx, func(tx pgx.Tx) error {
				if _, err := db.AppendAny(ctx, tx, []events.Event{registered(t, uuid.NewString(), "in flight")}); err != nil {
					return err
				}
				close(started)
				<-done
				return nil
			})
		}()
		<-started
		var once sync.Once
		release = func() { once.Do(func() { close(done) }) }
		t.Cleanup(release)
		return release
	}
	appendOne := func(name string) string {
		e := registered(t, uuid.NewString(), name)
		if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := db.AppendAny(ctx, tx, []events.Event{e}); return err }); err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	logged := func(id string) bool {
		evs, _, err := db.ReadEvents(ctx, postgres.Cursor{}, 1000, postgres.ReadFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.ID == id {
				return true
			}
		}
		return false
	}

	// Strangers: another database's transaction, and one of this
	// database that appends nothing.
	elsewhere, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(elsewhere.Close)
	holdOpen(elsewhere)
	holdOpen(pool)
	id := appendOne("beside strangers")
	if !logged(id) {
		t.Fatal("a transaction that appends nothing held the log back")
	}

	// An append in flight holds back what committed after it began.
	release := appendInFlight()
	id = appendOne("behind an append in flight")
	if logged(id) {
		t.Fatal("the reader returned an event behind an append still in flight")
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		release()
	}()
	if err := db.AwaitSettled(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !logged(id) {
		t.Fatal("after AwaitSettled the client's own event is missing from the log")
	}

	// A stuck append: readers wait for it at most as long as they said,
	// and that they stopped waiting is counted; how long the log has been
	// held back is a metric, and 0 again once the append ends.
	reg := prometheus.NewRegistry()
	reg.MustRegister(db.Collectors()...)
	if held := metrictest.Value(t, reg, "rackplane_region_event_log_held_back_seconds", nil); held != 0 {
		t.Fatalf("held back %v s with no append in flight", held)
	}
	release = appendInFlight()
	id = appendOne("behind a stuck append")
	if err := db.AwaitSettled(ctx, 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if logged(id) {
		t.Fatal("an event behind a still-open append was returned")
	}
	if n := metrictest.Value(t, reg, "rackplane_region_event_log_settle_timeouts_total", nil); n != 1 {
		t.Fatalf("settle timeouts counted: %v, want 1", n)
	}
	if held := metrictest.Value(t, reg, "rackplane_region_event_log_held_back_seconds", nil); held < 0.15 {
		t.Fatalf("held back %v s while an append has been in flight for longer than AwaitSettled waited", held)
	}
	release()
	if err := db.AwaitSettled(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !logged(id) {
		t.Fatal("after the stuck append ended the event is still missing")
	}
	if held := metrictest.Value(t, reg, "rackplane_region_event_log_held_back_seconds", nil); held != 0 {
		t.Fatalf("held back %v s after the append ended", held)
	}
}

// TestAppendAnyBatchWithLoggedEvents: a batch that repeats events already
// in the log (a redelivery), none twice in itself, is refused by the
// log's unique id on the first try and appended by looking ids up: the
// logged ones come back as duplicates at their first positions, the new
// ones are written with the stream's next versions, in batch order, and
// nothing of the first try remains.
func TestAppendAnyBatchWithLoggedEvents(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	rackA, rackB := uuid.NewString(), uuid.NewString()
	a1, b1 := registered(t, rackA, "a"), registered(t, rackB, "b")
	var first []postgres.Appended
	if err := db.InTx(ctx, func(tx pgx.Tx) (err error) {
		first, err = db.AppendAny(ctx, tx, []events.Event{a1, b1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	a2, a3, b2 := registered(t, rackA, "a"), registered(t, rackA, "a"), registered(t, rackB, "b")
	var got []postgres.Appended
	if err := db.InTx(ctx, func(tx pgx.Tx) (err error) {
		got, err = db.AppendAny(ctx, tx, []events.Event{a2, a1, b2, a3, b1})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	byID := map[string]postgres.Appended{}
	for _, a := range got {
		byID[a.ID] = a
	}
	if len(got) != 5 || !byID[a1.ID].Duplicate || byID[a1.ID].Position != first[0].Position ||
		!byID[b1.ID].Duplicate || byID[b1.ID].Position != first[1].Position {
		t.Fatalf("outcomes %+v, want a1 and b1 duplicates at %+v", got, first)
	}
	for _, tc := range []struct {
		e       events.Event
		version int64
	}{{a2, 2}, {a3, 3}, {b2, 2}} {
		if a := byID[tc.e.ID]; a.Duplicate || a.Version != tc.version {
			t.Errorf("event %s: %+v, want written at version %d", tc.e.ID, a, tc.version)
		}
	}
	if !(byID[a2.ID].Position < byID[b2.ID].Position && byID[b2.ID].Position < byID[a3.ID].Position) {
		t.Errorf("positions %+v, want batch order", got)
	}
	for _, rack := range []string{rackA, rackB} {
		var n, top, v int64
		if err := db.Pool().QueryRow(ctx, `SELECT count(*), max(version), (SELECT version FROM streams WHERE name = $1)
			FROM events WHERE stream = $1`, events.RackStreamName(rack)).Scan(&n, &top, &v); err != nil {
			t.Fatal(err)
		}
		if v != n || top != n {
			t.Errorf("stream of %s: %d events, top version %d, stream version %d", rack, n, top, v)
		}
	}
}

// TestAppendAnyInEveryExecMode: a batch goes in the same whatever the
// query exec mode of the pool (arrays written by hand where the
// statements are described, Go slices for pgx to encode elsewhere), and
// one whose data pgx sends as NULL is refused by the log alike.
func TestAppendAnyInEveryExecMode(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		t.Run(mode.String(), func(t *testing.T) {
			cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnConfig.DefaultQueryExecMode = mode
			pool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			db := postgres.New(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			racks := []string{uuid.NewString(), uuid.NewString()}
			var evs []events.Event
			for i := range 7 {
				e := registered(t, racks[i%2], fmt.Sprintf("r\"{}\\ é, NULL %d", i))
				e.Time = time.Date(1999+i, 12, 31, 23, 59, 59, 999999999, time.FixedZone("x", -3600*i))
				switch i % 3 {
				case 0:
					e.CorrelationID, e.Actor = "corr", "actor \"x\""
				case 1:
					e.CausationID = "cause"
				}
				evs = append(evs, e)
			}
			err = db.InTx(ctx, func(tx pgx.Tx) error {
				_, err := db.AppendAny(ctx, tx, evs)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := db.ReadEvents(ctx, postgres.Cursor{}, 100, postgres.ReadFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(evs) {
				t.Fatalf("%d events read, want %d", len(got), len(evs))
			}
			versions := map[string]int64{}
			for i, s := range got {
				e := evs[i]
				versions[e.Subject]++
				want := e.Time.Truncate(time.Microsecond)
				if s.ID != e.ID || s.Subject != e.Subject || s.Type != e.Type || s.Source != e.Source ||
					!s.Time.Equal(want) || s.CorrelationID != e.CorrelationID || s.CausationID != e.CausationID ||
					s.Actor != e.Actor || !sameJSON(t, s.Data, e.Data) || s.Version != versions[e.Subject] {
					t.Errorf("event %d read as %+v,\nappended %+v (version %d)", i, s.Event, e, versions[e.Subject])
				}
			}
			// No data: pgx sends NULL, which the log refuses.
			nodata := registered(t, racks[0], "x")
			nodata.Data = nil
			err = db.InTx(ctx, func(tx pgx.Tx) error {
				_, err := db.AppendAny(ctx, tx, []events.Event{nodata})
				return err
			})
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "23502" {
				t.Errorf("an event without data appended: %v", err)
			}
		})
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(va, vb)
}
