package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/rackplane/rackplane/region/machine"
	"github.com/rackplane/rackplane/region/postgres"
	"github.com/rackplane/rackplane/region/regiontest"
)

// TestMachineQueryPlans: on a table of many machines, a machine is read
// through the primary key and a page of the list through the hostnames'
// index (keyset paging: the page after a hostname is found, not counted
// to), with the statements the API runs. A plan that reads the table
// whole would cost in proportion to the machines, for every request.
func TestMachineQueryPlans(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a table of 20000 machines")
	}
	ctx := context.Background()
	db := regiontest.DB(t)
	if _, err := db.Pool().Exec(ctx, `INSERT INTO machines (id, hostname, macs, arch, status, origin, created_at, updated_at, version)
		SELECT gen_random_uuid(), 'node-' || lpad(i::text, 6, '0'), ARRAY['52:54:00:00:' || lpad(to_hex(i / 256 % 256), 2, '0') || ':' || lpad(to_hex(i % 256), 2, '0')],
			'amd64', 'ready', 'api', now(), now(), 1
		FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, `ANALYZE machines`); err != nil {
		t.Fatal(err)
	}
	listSQL, listArgs := postgres.ListMachinesQuery(machine.Filter{After: "node-010000"})
	if listSQL != postgres.ListMachinesSQL {
		t.Errorf("an unfiltered list runs\n%s\nnot ListMachinesSQL", listSQL)
	}
	conn, err := db.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	for _, tt := range []struct {
		name, sql string
		args      []any
		index     string
	}{
		{"get machine", postgres.GetMachineSQL, []any{uuid.New()}, "machines_pkey"},
		{"list page", listSQL, listArgs, "machines_hostname_key"},
		{"first list page", listSQL, []any{"", 100}, "machines_hostname_key"},
	} {
		// Planned for the values, and generic, as a statement prepared
		// once comes to be planned after a few runs.
		for _, mode := range []string{"auto", "force_generic_plan"} {
			t.Run(tt.name+" "+mode, func(t *testing.T) {
				if _, err := conn.Exec(ctx, `SET plan_cache_mode = `+mode); err != nil {
					t.Fatal(err)
				}
				rows, err := conn.Query(ctx, `EXPLAIN `+tt.sql, append([]any{pgx.QueryExecModeExec}, tt.args...)...)
				if err != nil {
					t.Fatal(err)
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				plan := strings.Join(lines, "\n")
				if !strings.Contains(plan, "Index Scan using "+tt.index+" on machines") || strings.Contains(plan, "Seq Scan on machines") {
					t.Errorf("plan does not read machines through %s:\n%s", tt.index, plan)
				}
			})
		}
	}
}

// BenchmarkListMachinesPage is the region's side of a list page of 100
// machines: the query, and scanning its rows.
func BenchmarkListMachinesPage(b *testing.B) {
	ctx := context.Background()
	db := regiontest.DB(b)
	if _, err := db.Pool().Exec(ctx, `INSERT INTO machines (id, hostname, macs, arch, status, origin, created_at, updated_at, version)
		SELECT gen_random_uuid(), 'node-' || lpad(i::text, 6, '0'), ARRAY['52:54:00:00:' || lpad(to_hex(i / 256 % 256), 2, '0') || ':' || lpad(to_hex(i % 256), 2, '0')],
			'amd64', 'ready', 'api', now(), now(), 1
		FROM generate_series(1, 1000) i`); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ms, err := db.ListMachines(ctx, machine.Filter{After: "node-000100", Limit: 100})
		if err != nil || len(ms) != 100 {
			b.Fatal(len(ms), err)
		}
	}
}
