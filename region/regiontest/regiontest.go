// Package regiontest gives the tests of the region's parts what they run
// on: a migrated event store in a database of their own, an embedded NATS
// server with the event streams, and rack events.
package regiontest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/secrets"
)

// Logger discards what it is given, unless RACKPLANE_TEST_LOG is set: then
// it writes everything to stderr.
func Logger() *slog.Logger {
	if os.Getenv("RACKPLANE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// DB returns the event store on a migrated database of t's own.
func DB(t testing.TB) *postgres.DB {
	t.Helper()
	db := postgres.New(pgtest.NewPool(t), Logger())
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// KeyFile writes a new secrets key into t's temporary directory and
// returns its path, for a region's -secrets-key-file.
func KeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secrets.key")
	if err := os.WriteFile(path, secrets.GenerateKey(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Keys returns a keyring on a new key.
func Keys(t testing.TB) *secrets.Keyring {
	t.Helper()
	k, err := secrets.ParseKey(secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	return secrets.NewKeyring(k)
}

// NATS starts an embedded NATS server for t with the event streams, and
// returns it with a connection that reconnects for ever and JetStream on
// that connection.
func NATS(t testing.TB) (*natsserver.Test, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := natsserver.StartTest(t)
	nc := ns.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventbus.EnsureStreams(context.Background(), js, time.Hour); err != nil {
		t.Fatal(err)
	}
	return ns, nc, js
}

// Validator returns the validator of the schemas under schema/.
func Validator(t testing.TB) *events.Validator {
	t.Helper()
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// RackEvent builds an event of rack rackID's, on its stream.
func RackEvent(t testing.TB, rackID, typ string, data any) events.Event {
	t.Helper()
	e, err := events.New(events.RackSource(rackID), typ, events.RackStreamName(rackID), time.Now(), data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Registered is rack rackID's rack_registered, saying it beats every
// interval (0: it does not say).
func Registered(t testing.TB, rackID, name string, interval time.Duration) events.Event {
	t.Helper()
	return RackEvent(t, rackID, events.TypeRackRegistered, events.RackRegistered{
		Name: name, Version: "test", StartedAt: time.Now().UTC(), HeartbeatIntervalMS: interval.Milliseconds(),
	})
}

// Encode encodes e for the wire.
func Encode(t testing.TB, e events.Event) []byte {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Logged returns how many times each event id is in the log. It reads the
// table itself: ReadEvents holds back what any transaction still running
// on the server might precede, in any database, other tests' included.
func Logged(t testing.TB, db *postgres.DB) map[string]int {
	t.Helper()
	rows, err := db.Pool().Query(context.Background(), `SELECT id::text FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}

// StreamEvents returns the events of stream in the log, in order (read as
// Logged reads).
func StreamEvents(t testing.TB, db *postgres.DB, stream string) []events.Event {
	t.Helper()
	rows, err := db.Pool().Query(context.Background(), `SELECT id::text, type, source, stream, data
		FROM events WHERE stream = $1 ORDER BY version`, stream)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (events.Event, error) {
		var e events.Event
		err := row.Scan(&e.ID, &e.Type, &e.Source, &e.Subject, &e.Data)
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// Eventually calls f until it returns nil; after timeout, t fails with
// what it said last.
func Eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Run runs f (a part's Run) until t ends, and fails t if it returns an
// error.
func Run(t testing.TB, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}
