package region_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region"
	"github.com/rackplane/rackplane/region/regiontest"
)

// BenchmarkIngestVsCopy compares end-to-end ingest with the ceiling of
// Postgres itself on this machine, in one run, rounds interleaved: the
// same kind of event rows loaded by psql's \copy (psql started here) into
// a scratch table with the events table's indexes, and the same number of
// events published by 10 racks and ingested by a region, publish to
// committed. Then the latency from a rack's publish to the commit at a
// steady 1,000 events/s, as its p99. The last line is the ratio of
// ingest to \copy (medians of the rounds).
//
// The NATS server and the racks' publishers run in a process of their own
// (this test binary again, ingestRacksChild), at this one's priority, so
// that this process holds the region alone and what the load costs to
// make is not taken from it; as psql is for \copy. Each round says
// what CPU the region's process, the racks' and NATS's, and the region
// database's backends used, and what those backends waited on: on a
// machine whose CPUs run out, the rate is what the three cost together.
//
//	go test -run '^$' -bench BenchmarkIngestVsCopy -benchtime 1x ./region
//
// RACKPLANE_BENCH_EVENTS sets the events per round (default 50000),
// RACKPLANE_BENCH_INGEST_CONCURRENCY the region's -ingest-concurrency and
// RACKPLANE_BENCH_POOL its pool_max_conns (defaults: the region's);
// RACKPLANE_BENCH_NOTIFY_IN_TX, when set, makes ingest's transactions
// notify as they commit, as every append did before migration 0030.
// RACKPLANE_BENCH_RACKS_CPUPROFILE names a file for the CPU profile of
// the racks' and NATS's process (-cpuprofile gives the region's).
func BenchmarkIngestVsCopy(b *testing.B) {
	psql := findPsql(b)
	n := 50000
	if s := os.Getenv("RACKPLANE_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			b.Fatalf("RACKPLANE_BENCH_EVENTS=%q: want a number of events, at least 100", s)
		}
	}
	const racks, rounds = 10, 3
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(b)
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	if v := os.Getenv("RACKPLANE_BENCH_POOL"); v != "" {
		if pcfg.MaxConns = int32(atoiEnv(b, "RACKPLANE_BENCH_POOL", v)); pcfg.MaxConns < 1 {
			b.Fatalf("RACKPLANE_BENCH_POOL=%q: want 1 or more", v)
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	// The bench's own queries (waiting for the last events, the CPU
	// samples) go through a pool of its own, named, so that what the
	// region's backends cost is theirs alone.
	own, err := pgxpool.New(ctx, dbURL+"&application_name="+benchApp)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(own.Close)
	var dbName string
	if err := own.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		b.Fatal(err)
	}
	s := &copySite{b: b, pool: own, dbName: dbName, versions: map[string]int64{}}
	for range racks {
		s.racks = append(s.racks, uuid.NewString())
	}
	s.proc = startIngestRacks(b, s.racks, n+1)
	cfg := region.DefaultConfig()
	cfg.Secrets.KeyFile = regiontest.KeyFile(b)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.NoNATSCallout = true
	if v := os.Getenv("RACKPLANE_BENCH_INGEST_CONCURRENCY"); v != "" {
		cfg.IngestConcurrency = atoiEnv(b, "RACKPLANE_BENCH_INGEST_CONCURRENCY", v)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	startBenchRegionConfig(rctx, b, func() *nats.Conn {
		nc, err := nats.Connect(s.proc.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		return nc
	}, pool, cfg)
	if os.Getenv("RACKPLANE_BENCH_NOTIFY_IN_TX") != "" {
		// Every append notifies inside its transaction again, as before
		// migration 0030: the figures of the two, side by side.
		if _, err := pool.Exec(ctx, `CREATE OR REPLACE FUNCTION events_appended() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN PERFORM pg_notify('rackplane_events', ''); RETURN NULL; END; $$`); err != nil {
			b.Fatal(err)
		}
	}
	// The scratch table is the events table's twin: columns, defaults,
	// identity, constraints and every index (the partial ones too).
	if _, err := own.Exec(ctx, `CREATE TABLE copy_ceiling (LIKE events INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	// Warm up: the racks' streams exist, the region's pool is open.
	s.ingest(s.batch(1000))

	b.ResetTimer()
	var copyRates, ingestRates []float64
	for round := 1; round <= rounds; round++ {
		evs := s.batch(n)
		var cr, ir float64
		// Alternate which goes first, so neither always runs on a
		// cooler (or warmer) machine.
		if round%2 == 1 {
			cr = s.copy(psql, dbURL, evs)
			ir = s.ingest(evs)
		} else {
			ir = s.ingest(evs)
			cr = s.copy(psql, dbURL, evs)
		}
		copyRates, ingestRates = append(copyRates, cr), append(ingestRates, ir)
		fmt.Printf("round %d: \\copy %.0f events/s, ingest from %d racks %.0f events/s (%.2fx)\n", round, cr, racks, ir, ir/cr)
	}
	p99, p50, count := s.steady(ctx, dbURL, 1000, 10*time.Second)
	fmt.Printf("steady 1000 events/s from %d racks: rack publish to committed p50 %v, p99 %v (%d events)\n",
		racks, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), count)
	cm, im := median(copyRates), median(ingestRates)
	b.ReportMetric(im, "ingest-events/s")
	b.ReportMetric(cm, "copy-events/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	fmt.Printf("ratio ingest/\\copy: %.2f (ingest %.0f events/s, \\copy %.0f events/s, medians of %d rounds of %d events)\n",
		im/cm, im, cm, rounds, n)
}

type copySite struct {
	b        *testing.B
	pool     *pgxpool.Pool // the bench's own connections (benchApp), not the region's
	dbName   string
	racks    []string
	proc     *ingestRacks
	versions map[string]int64 // the scratch table's stream versions
}

// batch makes n events, spread over the racks in turn.
func (s *copySite) batch(n int) []events.Event {
	evs := make([]events.Event, n)
	for i := range evs {
		id := s.racks[i%len(s.racks)]
		e, err := events.New(events.RackSource(id), events.TypeEventsDropped, events.RackStreamName(id), time.Now(),
			events.EventsDropped{Count: 1, Since: time.Now().UTC()})
		if err != nil {
			s.b.Fatal(err)
		}
		evs[i] = e
	}
	return evs
}

// ingest publishes evs from their racks and returns events/s from the
// first publish until the last event of every rack is in the log (each
// rack's events go in in order), after checking they all are.
func (s *copySite) ingest(evs []events.Event) float64 {
	ctx := context.Background()
	last := map[string]string{}
	ids := make([]string, len(evs))
	for i, e := range evs {
		last[e.Source] = e.ID
		ids[i] = e.ID
	}
	lastIDs := make([]string, 0, len(last))
	for _, id := range last {
		lastIDs = append(lastIDs, id)
	}
	s.proc.load(evs)
	pg := newPGCPU()
	pg.sample(ctx, s.pool, s.dbName)
	regionCPU, racksCPU := s.proc.cpu()
	start := time.Now()
	s.proc.do("go", "published")
	defer func() {
		r, k := s.proc.cpu()
		elapsed := time.Since(start)
		pg.sample(ctx, s.pool, s.dbName)
		fmt.Printf("  ingest used %.2fs CPU in the region's process, %.2fs in the racks' and NATS's, %.2fs in Postgres's backends (active: %s), over %.2fs\n",
			(r - regionCPU).Seconds(), (k - racksCPU).Seconds(), float64(pg.total())/clockTicks, pg.topWaits(), elapsed.Seconds())
	}()
	deadline := start.Add(10 * time.Minute)
	lastSample := start
	for {
		if time.Since(lastSample) >= 20*time.Millisecond {
			pg.sample(ctx, s.pool, s.dbName)
			lastSample = time.Now()
		}
		var got int
		// Planned for these ids each time: a generic plan may scan the
		// log, and this runs every couple of milliseconds beside the
		// ingest it measures.
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = ANY($1::uuid[])`,
			pgx.QueryExecModeExec, lastIDs).Scan(&got); err != nil {
			s.b.Fatal(err)
		}
		if got == len(lastIDs) {
			break
		}
		if time.Now().After(deadline) {
			s.b.Fatalf("%d of %d racks' last events in the log after %v", got, len(lastIDs), time.Since(start))
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	var got int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE id = ANY($1::uuid[])`,
		pgx.QueryExecModeExec, ids).Scan(&got); err != nil {
		s.b.Fatal(err)
	}
	if got != len(evs) {
		s.b.Fatalf("%d of %d events in the log once the racks' last ones are", got, len(evs))
	}
	return float64(len(evs)) / elapsed.Seconds()
}

var psqlTime = regexp.MustCompile(`(?m)^Time: ([0-9.]+) ms`)

// copy writes evs as the rows Append would store and loads them with
// psql's \copy into the scratch table; events/s is of the \copy alone,
// as psql times it (not psql's start).
func (s *copySite) copy(psql, dbURL string, evs []events.Event) float64 {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	for _, e := range evs {
		s.versions[e.Subject]++
		if err := w.Write([]string{e.ID, e.Subject, strconv.FormatInt(s.versions[e.Subject], 10), e.Type, e.Source,
			e.Time.Format(time.RFC3339Nano), e.CorrelationID, e.CausationID, e.Actor, string(e.Data)}); err != nil {
			s.b.Fatal(err)
		}
	}
	w.Flush()
	file := filepath.Join(s.b.TempDir(), "rows.csv")
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		s.b.Fatal(err)
	}
	script := "\\timing on\n\\copy copy_ceiling (id, stream, version, type, source, time, correlation_id, causation_id, actor, data) " +
		"FROM '" + file + "' WITH (FORMAT csv)\n"
	cmd := exec.Command(psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", dbURL)
	cmd.Stdin = bytes.NewBufferString(script)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		s.b.Fatalf("psql \\copy: %v\n%s", err, out)
	}
	m := psqlTime.FindSubmatch(out)
	if m == nil {
		s.b.Logf("psql printed no timing (%q); using its wall time", out)
		return float64(len(evs)) / wall.Seconds()
	}
	ms, _ := strconv.ParseFloat(string(m[1]), 64)
	return float64(len(evs)) / (ms / 1000)
}

// steady publishes rate events/s, round-robin over the racks, for d, and
// returns the p99 and p50 of the time from each Publish to the moment its
// commit is visible to a reader woken by the log's notification (or by
// its own 5 ms timeout).
func (s *copySite) steady(ctx context.Context, dbURL string, rate int, d time.Duration) (p99, p50 time.Duration, n int) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		s.b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `LISTEN rackplane_events`); err != nil {
		s.b.Fatal(err)
	}
	total := int(d.Seconds() * float64(rate))
	published := make(map[string]time.Time, total)
	pubc := s.proc.steady(rate, total)
	var lat []time.Duration
	deadline := time.Now().Add(d + time.Minute)
	for len(lat) < total && time.Now().Before(deadline) {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.b.Fatal(err)
		}
		for len(pubc) > 0 {
			p := <-pubc
			published[p.id] = p.at
		}
		if len(published) == 0 {
			continue
		}
		seen := time.Now()
		// The events published and not yet seen, by id: concurrent
		// transactions commit positions out of order, so a reader that
		// went on from the highest position seen would miss those
		// committed late below it.
		waiting := make([]string, 0, len(published))
		for id := range published {
			waiting = append(waiting, id)
		}
		rows, err := conn.Query(ctx, `SELECT id::text FROM events WHERE id = ANY($1::uuid[])`,
			pgx.QueryExecModeExec, waiting)
		if err != nil {
			s.b.Fatal(err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				s.b.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			s.b.Fatal(err)
		}
		for _, id := range ids {
			lat = append(lat, seen.Sub(published[id]))
			delete(published, id)
		}
	}
	if len(lat) < total {
		s.b.Fatalf("%d of %d events committed", len(lat), total)
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], lat[len(lat)/2], len(lat)
}

func findPsql(b *testing.B) string {
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	p := "/usr/lib/postgresql/15/bin/psql"
	if _, err := os.Stat(p); err != nil {
		b.Fatal("no psql on PATH nor in /usr/lib/postgresql/15/bin: the \\copy ceiling needs it (Debian package postgresql-client)")
	}
	return p
}
