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

// TestNotifyLaterAppends: an append in a transaction of InTxNotifyLater
// wakes no listener by its commit (a notification sent after it arrives
// first), NotifyAppended does, and an append of InTx still notifies.
func TestNotifyLaterAppends(t *testing.T) {
	db := regiontest.DB(t)
	ctx := context.Background()
	conn, err := db.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.EventsChannel); err != nil {
		t.Fatal(err)
	}
	appendIn := func(inTx func(context.Context, func(pgx.Tx) error) error) {
		t.Helper()
		rack := uuid.NewString()
		e, _ := events.New(events.RackSource(rack), events.TypeRackRegistered, events.RackStreamName(rack), time.Now(),
			events.RackRegistered{Name: "r", Version: "1", StartedAt: time.Now().UTC()})
		if err := inTx(ctx, func(tx pgx.Tx) error {
			_, err := db.AppendAny(ctx, tx, []events.Event{e})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			t.Fatal(err)
		}
		return n.Payload
	}
	send := func(payload string) {
		t.Helper()
		if _, err := db.Pool().Exec(ctx, "SELECT pg_notify($1, $2)", postgres.EventsChannel, payload); err != nil {
			t.Fatal(err)
		}
	}

	appendIn(db.InTxNotifyLater)
	send("after quiet append")
	if got := next(); got != "after quiet append" {
		t.Fatalf("first notification after an append of InTxNotifyLater: %q, want the one sent after it", got)
	}
	if err := db.NotifyAppended(ctx); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "" {
		t.Fatalf("NotifyAppended sent %q", got)
	}
	// The setting was the transaction's alone: the connection's next
	// transaction notifies as any append does.
	for range 4 {
		appendIn(db.InTx)
		if got := next(); got != "" {
			t.Fatalf("notification of an append of InTx: %q", got)
		}
	}
}
