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

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/eventbus"
	"github.com/rackplane/rackplane/internal/natsserver"
	"github.com/rackplane/rackplane/internal/pgtest"
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
//	go test -run '^$' -bench BenchmarkIngestVsCopy -benchtime 1x ./region
//
// RACKPLANE_BENCH_EVENTS sets the events per round (default 50000).
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
	ns := natsserver.StartTest(b)
	dbURL := pgtest.NewDatabase(b)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	js := startBenchRegion(rctx, b, ns, pool)
	s := &copySite{b: b, pool: pool, versions: map[string]int64{}}
	for range racks {
		id := uuid.NewString()
		p := eventbus.NewPublisher(js, eventbus.PublisherConfig{Source: events.RackSource(id), Subject: events.RackStreamName(id), Buffer: n + 1})
		go p.Run(rctx)
		s.racks = append(s.racks, id)
		s.pubs = append(s.pubs, p)
	}
	// The scratch table is the events table's twin: columns, defaults,
	// identity, constraints and every index (the partial ones too).
	if _, err := pool.Exec(ctx, `CREATE TABLE copy_ceiling (LIKE events INCLUDING ALL)`); err != nil {
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
	pool     *pgxpool.Pool
	racks    []string
	pubs     []*eventbus.Publisher
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
	start := time.Now()
	for i, e := range evs {
		s.pubs[i%len(s.pubs)].Publish(e)
	}
	deadline := start.Add(10 * time.Minute)
	for {
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
	pubc := make(chan struct {
		id string
		at time.Time
	}, total)
	go func() {
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		for i := range total {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				time.Sleep(wait)
			}
			id := s.racks[i%len(s.racks)]
			now := time.Now()
			e, err := events.New(events.RackSource(id), events.TypeEventsDropped, events.RackStreamName(id), now,
				events.EventsDropped{Count: 1, Since: now.UTC()})
			if err != nil {
				panic(err)
			}
			pubc <- struct {
				id string
				at time.Time
			}{e.ID, now}
			s.pubs[i%len(s.pubs)].Publish(e)
		}
	}()
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
