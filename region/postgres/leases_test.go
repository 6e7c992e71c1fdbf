package postgres_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rackplane/rackplane/events"
	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestLeasesProjection applies racks' dhcp_leases_changed events and
// lists the current leases: what each action does to a lease, expiry,
// the order of changes within one event, racks kept apart, and a rebuild
// giving the same table.
func TestLeasesProjection(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	exp := func(min int) *time.Time { e := at(min); return &e }
	change := func(action, mac, ip string, min int, expires *time.Time) events.DHCPLeaseChange {
		return events.DHCPLeaseChange{Action: action, MAC: mac, IP: ip, Subnet: "10.9.0.0/24", Hostname: "h-" + mac[len(mac)-2:],
			Expires: expires, Count: 1, At: at(min)}
	}
	const m1, m2, m3 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
	tests := []struct {
		name    string
		reports [][]events.DHCPLeaseChange // one event each
		now     int                        // minutes after t0
		want    []string                   // "ip mac last_action count"
	}{
		{"acked", [][]events.DHCPLeaseChange{{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61))}}, 2,
			[]string{"10.9.0.10 " + m1 + " acked 1"}},
		{"offered is no lease", [][]events.DHCPLeaseChange{{change(events.DHCPOffered, m1, "10.9.0.10", 1, nil)}}, 2, nil},
		{"proxy boot offers have no address", [][]events.DHCPLeaseChange{{{Action: events.DHCPBootOffered, MAC: m1, Count: 3, At: at(1)}}}, 2, nil},
		{"renewals count", [][]events.DHCPLeaseChange{
			{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61))},
			{change(events.DHCPAcked, m1, "10.9.0.10", 31, exp(91))},
		}, 70, []string{"10.9.0.10 " + m1 + " acked 2"}},
		{"expired", [][]events.DHCPLeaseChange{{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61))}}, 62, nil},
		{"released", [][]events.DHCPLeaseChange{
			{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61)), change(events.DHCPAcked, m2, "10.9.0.11", 1, exp(61))},
			{change(events.DHCPReleased, m1, "10.9.0.10", 5, nil)},
		}, 6, []string{"10.9.0.11 " + m2 + " acked 1"}},
		{"declined and refused", [][]events.DHCPLeaseChange{
			{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61)), change(events.DHCPAcked, m2, "10.9.0.11", 1, exp(61)),
				change(events.DHCPAcked, m3, "10.9.0.12", 1, exp(61))},
			{change(events.DHCPDeclined, m1, "10.9.0.10", 5, exp(65)), change(events.DHCPRefused, m2, "10.9.0.11", 5, nil)},
		}, 6, []string{"10.9.0.12 " + m3 + " acked 1"}},
		// Changes in one event apply in the order they happened, not as listed.
		{"released then acked again in one event", [][]events.DHCPLeaseChange{
			{change(events.DHCPAcked, m1, "10.9.0.10", 9, exp(69)), change(events.DHCPReleased, m1, "10.9.0.10", 5, nil)},
		}, 10, []string{"10.9.0.10 " + m1 + " acked 1"}},
		{"acked then released in one event", [][]events.DHCPLeaseChange{
			{change(events.DHCPReleased, m1, "10.9.0.10", 9, nil), change(events.DHCPAcked, m1, "10.9.0.10", 5, exp(65))},
		}, 10, nil},
		{"a new address for the client", [][]events.DHCPLeaseChange{
			{change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61))},
			{change(events.DHCPReleased, m1, "10.9.0.10", 2, nil), change(events.DHCPAcked, m1, "10.9.0.20", 3, exp(63))},
		}, 4, []string{"10.9.0.20 " + m1 + " acked 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := regiontest.DB(t)
			rack := uuid.NewString()
			for i, cs := range tt.reports {
				appendLeases(t, db, rack, cs, at(i*30+30))
			}
			got := listLeases(t, db, postgres.LeaseFilter{Now: at(tt.now)})
			if !slices.Equal(got, tt.want) {
				t.Fatalf("leases %q, want %q", got, tt.want)
			}
			before := dumpTable(t, db, "dhcp_leases")
			if _, err := db.RebuildProjections(ctx); err != nil {
				t.Fatal(err)
			}
			if after := dumpTable(t, db, "dhcp_leases"); after != before {
				t.Fatalf("the table differs after a rebuild:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	t.Run("racks, filters and pages", func(t *testing.T) {
		db := regiontest.DB(t)
		a, b := uuid.NewString(), uuid.NewString()
		appendLeases(t, db, a, []events.DHCPLeaseChange{
			change(events.DHCPAcked, m1, "10.9.0.10", 1, exp(61)), change(events.DHCPAcked, m2, "10.9.0.11", 1, exp(61)),
			{Action: events.DHCPAcked, MAC: m3, IP: "10.8.0.5", Subnet: "10.8.0.0/24", Expires: exp(61), Count: 1, At: at(1)},
		}, at(2))
		// Rack b's release of rack a's address changes nothing of a's.
		appendLeases(t, db, b, []events.DHCPLeaseChange{
			change(events.DHCPAcked, m3, "10.9.0.10", 1, exp(61)), change(events.DHCPReleased, m1, "10.9.0.10", 2, nil),
		}, at(2))
		// A region event of the type projects nothing.
		region, _ := events.New(events.RegionSource, events.TypeDHCPLeasesChanged, "rack/"+a, at(3),
			events.DHCPLeasesChanged{Mode: "managed", Since: at(0), Until: at(3),
				Changes: []events.DHCPLeaseChange{change(events.DHCPReleased, m2, "10.9.0.11", 3, nil)}})
		appendEvents(t, db, region)
		now := at(4)
		if got := listLeases(t, db, postgres.LeaseFilter{Now: now}); !slices.Equal(got, []string{
			"10.8.0.5 " + m3 + " acked 1", "10.9.0.10 " + m1 + " acked 1", "10.9.0.10 " + m3 + " acked 1", "10.9.0.11 " + m2 + " acked 1"}) {
			t.Fatalf("all leases: %q", got)
		}
		p := netip.MustParsePrefix("10.9.0.0/24")
		if got := listLeases(t, db, postgres.LeaseFilter{Now: now, RackID: a, Subnet: &p}); !slices.Equal(got, []string{
			"10.9.0.10 " + m1 + " acked 1", "10.9.0.11 " + m2 + " acked 1"}) {
			t.Fatalf("rack a's 10.9.0.0/24: %q", got)
		}
		if got := listLeases(t, db, postgres.LeaseFilter{Now: now, MAC: m3}); len(got) != 2 {
			t.Fatalf("mac %s: %q", m3, got)
		}
		// Pages of one: each continues where the last ended.
		var paged []string
		f := postgres.LeaseFilter{Now: now, Limit: 1}
		for range 10 {
			page, err := db.ListLeases(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			paged = append(paged, page[0].IP+" "+page[0].MAC)
			f.After = postgres.LeaseCursor(page[0])
		}
		if len(paged) != 4 || !slices.IsSorted(paged) {
			t.Fatalf("paged: %q", paged)
		}
		if _, err := db.ListLeases(ctx, postgres.LeaseFilter{Now: now, After: "junk"}); err == nil {
			t.Fatal("a bad cursor was taken")
		}
		// A report a day later drops what ended before then.
		appendLeases(t, db, a, nil, at(2+int(postgres.LeaseKeep/time.Minute)+62))
		if n := strings.Count(dumpTable(t, db, "dhcp_leases"), `"rack_id"`); n != 1 {
			t.Fatalf("%d leases left after rack a's report a day later, want rack b's one", n)
		}
	})
}

func appendLeases(t *testing.T, db *postgres.DB, rack string, cs []events.DHCPLeaseChange, until time.Time) {
	t.Helper()
	ev, err := events.New(events.RackSource(rack), events.TypeDHCPLeasesChanged, events.RackStreamName(rack), until,
		events.DHCPLeasesChanged{Mode: "managed", Since: until.Add(-30 * time.Minute), Until: until, Changes: cs})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, db, ev)
}

func appendEvents(t *testing.T, db *postgres.DB, evs ...events.Event) {
	t.Helper()
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		_, err := db.AppendAny(context.Background(), tx, evs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func listLeases(t *testing.T, db *postgres.DB, f postgres.LeaseFilter) []string {
	t.Helper()
	ls, err := db.ListLeases(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		out = append(out, l.IP+" "+l.MAC+" "+l.LastAction+" "+fmt.Sprint(l.Count))
	}
	return out
}

// TestLeasesOfRetiredRack: a rack's retirement takes its leases with it,
// since it reports no more and nothing else would drop them, and a report
// it sends later is not taken; a rebuild gives the same table.
func TestLeasesOfRetiredRack(t *testing.T) {
	ctx := context.Background()
	db := regiontest.DB(t)
	now := time.Now().UTC().Truncate(time.Second)
	exp := now.Add(time.Hour)
	a, b := uuid.NewString(), uuid.NewString()
	appendEvents(t, db, registered(t, a, "lease-a"), registered(t, b, "lease-b"))
	ack := func(mac, ip string) []events.DHCPLeaseChange {
		return []events.DHCPLeaseChange{{Action: events.DHCPAcked, MAC: mac, IP: ip, Expires: &exp, Count: 1, At: now}}
	}
	appendLeases(t, db, a, ack("52:54:00:00:00:01", "10.9.0.10"), now)
	appendLeases(t, db, b, ack("52:54:00:00:00:02", "10.9.0.11"), now)
	retired, err := events.New(events.RegionSource, events.TypeRackRetired, events.RackStreamName(a), now,
		events.RackRetired{RackID: a, Name: "lease-a"})
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, db, retired)
	// What rack a says after its retirement is not taken.
	appendLeases(t, db, a, ack("52:54:00:00:00:03", "10.9.0.12"), now.Add(time.Second))
	want := []string{"10.9.0.11 52:54:00:00:00:02 acked 1"}
	if got := listLeases(t, db, postgres.LeaseFilter{Now: now}); !slices.Equal(got, want) {
		t.Fatalf("leases after rack a's retirement: %q, want rack b's alone %q", got, want)
	}
	if got := listLeases(t, db, postgres.LeaseFilter{Now: now.Add(2 * time.Hour)}); got != nil {
		t.Fatalf("expired leases listed: %q", got)
	}
	before := dumpTable(t, db, "dhcp_leases")
	if n := strings.Count(before, `"rack_id"`); n != 1 {
		t.Fatalf("%d rows in dhcp_leases, want rack b's one: %s", n, before)
	}
	if _, err := db.RebuildProjections(ctx); err != nil {
		t.Fatal(err)
	}
	if after := dumpTable(t, db, "dhcp_leases"); after != before {
		t.Fatalf("the table differs after a rebuild:\nbefore %s\nafter  %s", before, after)
	}
}

// queryRecorder keeps the last query a connection ran.
type queryRecorder struct {
	sql  string
	args []any
}

func (r *queryRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	r.sql, r.args = d.SQL, d.Args
	return ctx
}

func (r *queryRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestListLeasesUsesTheIndex: a rack's (and a subnet's) leases are found
// through the index on rack_id, not by reading every rack's; every rack's
// are read in the list's order, a page at a time.
func TestListLeasesUsesTheIndex(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	rec := &queryRecorder{}
	cfg.MaxConns = 1
	cfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	db := postgres.New(pool, regiontest.Logger())
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Plans are those of a table with leases in it: 20 racks with 1,000
	// each, as the projection keeps them.
	if _, err := pool.Exec(ctx, `INSERT INTO dhcp_leases (rack_id, mac, ip, subnet, last_action, expires, count, at)
		SELECT r.id, format('52:54:00:%s:%s:%s', to_hex(100 + g/256 % 100), to_hex(100 + g % 100), to_hex(16 + r.n)),
			('10.' || r.n || '.' || g/250 || '.' || 1 + g % 250)::inet, ('10.' || r.n || '.0.0/16')::cidr,
			'acked', now() + interval '1 hour', 1, now()
		FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, 20) n) r, generate_series(0, 999) g`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `ANALYZE dhcp_leases`); err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix("10.9.0.0/24")
	for _, f := range []postgres.LeaseFilter{
		{RackID: uuid.NewString(), Now: time.Now()},
		{RackID: uuid.NewString(), Subnet: &p, Now: time.Now()},
		// Every rack's, a page and the next: read in the list's order
		// from an index, not sorted whole for each page.
		{Now: time.Now()},
		{Now: time.Now(), After: "10.9.0.7|52:54:00:00:00:07|" + uuid.NewString()},
	} {
		if _, err := db.ListLeases(ctx, f); err != nil {
			t.Fatal(err)
		}
		sql, args := rec.sql, rec.args
		var plan []string
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, "EXPLAIN "+sql, args...)
			if err != nil {
				return err
			}
			plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(plan, "\n")
		if f.RackID == "" {
			if !strings.Contains(text, "dhcp_leases_current_order") || strings.Contains(text, "Sort") {
				t.Errorf("ListLeases %+v does not read the leases in order from dhcp_leases_current_order:\n%s", f, text)
			}
			continue
		}
		if !regexp.MustCompile(`Index Cond: \(+rack_id = `).MatchString(text) {
			t.Errorf("ListLeases %+v does not look rack_id up in an index:\n%s", f, text)
		}
	}
}
