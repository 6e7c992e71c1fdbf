package postgres_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
)

// BenchmarkRebuildVsPsql compares the projections' rebuild with psql
// reading the same log in the same order, over interleaved rounds, and
// prints the medians and their ratio last. Run it once:
//
//	go test -run '^$' -bench BenchmarkRebuildVsPsql -benchtime 1x ./region/postgres
//
// RACKPLANE_BENCH_EVENTS sets the log's size (default 1,000,000) and
// RACKPLANE_BENCH_ROUNDS the rounds (default 3). The log is generated
// once into database rackplane_bench_rebuild_<events> and kept for the
// next run; drop it to generate a new one.
func BenchmarkRebuildVsPsql(b *testing.B) {
	ctx := context.Background()
	n := envInt(b, "RACKPLANE_BENCH_EVENTS", 1_000_000)
	rounds := envInt(b, "RACKPLANE_BENCH_ROUNDS", 3)
	psql, err := exec.LookPath("psql")
	if err != nil {
		psql = "/usr/lib/postgresql/15/bin/psql"
		if _, err := os.Stat(psql); err != nil {
			b.Fatal("no psql to compare with: install the Debian package postgresql-client")
		}
	}
	dbURL := benchLog(b, n)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	db := postgres.New(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))

	read := `\copy (SELECT position, txid, id, stream, version, type, source, time, recorded_at, correlation_id, causation_id, actor, data FROM events ORDER BY position) TO '/dev/null'`
	var psqlTimes, rebuildTimes []time.Duration
	for r := range rounds {
		start := time.Now()
		out, err := exec.CommandContext(ctx, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbURL, "-c", read).CombinedOutput()
		if err != nil {
			b.Fatalf("psql: %v: %s", err, out)
		}
		psqlTimes = append(psqlTimes, time.Since(start))

		start = time.Now()
		got, err := db.RebuildProjectionsWith(ctx, postgres.RebuildOptions{Fresh: true})
		if err != nil {
			b.Fatal(err)
		}
		rebuildTimes = append(rebuildTimes, time.Since(start))
		if got != int64(n) {
			b.Fatalf("rebuild replayed %d events, want %d", got, n)
		}
		fmt.Printf("round %d: psql %v, rebuild %v\n", r+1, psqlTimes[r].Round(time.Millisecond), rebuildTimes[r].Round(time.Millisecond))
	}
	p, rb := median(psqlTimes), median(rebuildTimes)
	b.ReportMetric(p.Seconds(), "psql-s")
	b.ReportMetric(rb.Seconds(), "rebuild-s")
	b.ReportMetric(float64(n)/rb.Seconds(), "events/s")
	fmt.Printf("%d events, %d rounds: psql reading the log in order %v (median), rebuild %v (median), %.0f events/s\n",
		n, rounds, p.Round(time.Millisecond), rb.Round(time.Millisecond), float64(n)/rb.Seconds())
	fmt.Printf("rebuild/psql = %.2f\n", rb.Seconds()/p.Seconds())
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchLog returns the URL of a database holding a generated log of n
// events, creating it unless an earlier run left it complete.
func benchLog(b *testing.B, n int) string {
	ctx := context.Background()
	name := fmt.Sprintf("rackplane_bench_rebuild_%d", n)
	u, err := url.Parse(pgtest.AdminURL())
	if err != nil {
		b.Fatal(err)
	}
	u.Path = "/" + name
	if pool, err := pgxpool.New(ctx, u.String()); err == nil {
		var have int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&have)
		pool.Close()
		if err == nil && have == n {
			return u.String()
		}
	}
	admin, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, s := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "CREATE DATABASE " + name} {
		if _, err := admin.Exec(ctx, s); err != nil {
			b.Fatal(err)
		}
	}
	pool, err := pgxpool.New(ctx, u.String())
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	db := postgres.New(pool, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := db.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	// About one machine per 400 events and one rack per 100 machines:
	// rack chatter (heartbeats, boot telemetry, leases) is most of it.
	machines := max(n/400, 10)
	evs := newEventGen(1, max(machines/100, 2), machines).all(n)
	if err := loadLog(ctx, db, evs); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE events`); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("generated and loaded %d events (%d machines) in %v\n", n, machines, time.Since(start).Round(time.Millisecond))
	return u.String()
}
