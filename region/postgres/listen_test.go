package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestEventWatchWakesOnAppend: a reader waiting on the watch is woken by
// an append committed on another connection, and not by a transaction that
// appends nothing or rolls back (only once when the session starts, in
// case it missed an append).
func TestEventWatchWakesOnAppend(t *testing.T) {
	db := regiontest.DB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := db.NewEventWatch()
	go w.Run(ctx)

	appendOne := func(commit bool) {
		t.Helper()
		rack := uuid.NewString()
		e, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
			events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
		tx, err := db.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Append(ctx, tx, e.Subject, postgres.ExpectAny, e); err != nil {
			t.Fatal(err)
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The LISTEN session starts in the background: append until the
	// first wake-up shows it is up.
	deadline := time.Now().Add(10 * time.Second)
	for up := false; !up; {
		next := w.Next()
		appendOne(true)
		select {
		case <-next:
			up = true
		case <-time.After(200 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no wake-up within 10s of appends")
			}
		}
	}

	// Let the wake-ups of what came before pass: the session's own at its
	// start, and the appends' notifications, delivered in order.
	for quiet := false; !quiet; {
		select {
		case <-w.Next():
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}

	next := w.Next()
	if err := db.InTx(ctx, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, "SELECT 1"); return err }); err != nil {
		t.Fatal(err)
	}
	appendOne(false)
	select {
	case <-next:
		t.Fatal("woken by a transaction that appended nothing, or rolled back")
	case <-time.After(500 * time.Millisecond):
	}
	appendOne(true)
	select {
	case <-next:
	case <-time.After(5 * time.Second):
		t.Fatal("not woken within 5s of a committed append")
	}
}
