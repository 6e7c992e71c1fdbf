package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/rackplane/rackplane/internal/backoff"
)

// EventsChannel is notified (by a trigger) when a transaction appended
// events.
const EventsChannel = "rackplane_events"

// Listen runs one LISTEN session on channel, calling notify for each
// notification, until ctx ends or the connection fails; callers loop on
// it. The connection never goes back to the pool, which must not hand out
// a connection that is listening.
func (db *DB) Listen(ctx context.Context, channel string, notify func()) error {
	return db.listen(ctx, channel, notify, func(string) { notify() })
}

// listen is Listen with each notification's payload: up is called once
// the session listens, got for each notification.
func (db *DB) listen(ctx context.Context, channel string, up func(), got func(payload string)) error {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return wrap("listen", err)
	}
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx))
	if _, err := pc.Exec(ctx, "LISTEN "+quoteIdent(channel)); err != nil {
		return wrap("listen", err)
	}
	// Nobody listened until now (at start, or while the connection was
	// down): a notification of that time is lost, so up lets the caller
	// look once now (or start afresh) rather than miss what it told.
	up()
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return wrap("listen", err)
		}
		got(n.Payload)
	}
}

func quoteIdent(s string) string {
	out := []byte{'"'}
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			out = append(out, '"')
		}
		out = append(out, s[i])
	}
	return string(append(out, '"'))
}

// EventWatch tells readers waiting at the end of the log that events were
// appended, by any region instance.
type EventWatch struct {
	db   *DB
	mu   sync.Mutex
	next chan struct{}
}

// NewEventWatch returns a watch; Run feeds it.
func (db *DB) NewEventWatch() *EventWatch {
	return &EventWatch{db: db, next: make(chan struct{})}
}

// Next is closed at the next append after the call.
func (w *EventWatch) Next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.next
}

func (w *EventWatch) fire() {
	w.mu.Lock()
	close(w.next)
	w.next = make(chan struct{})
	w.mu.Unlock()
}

// Run listens until ctx ends, reconnecting within a second when the
// connection fails. While it is down, waiters fall back on their own
// timers, so a lost notification delays a reader and loses nothing.
func (w *EventWatch) Run(ctx context.Context) error {
	retry := backoff.New(backoff.Policy{Max: time.Second})
	for ctx.Err() == nil {
		if err := w.db.Listen(ctx, EventsChannel, w.fire); err != nil && ctx.Err() == nil {
			w.db.log.Debug("event watch", "err", err)
			retry.Wait(ctx)
		}
	}
	return nil
}
