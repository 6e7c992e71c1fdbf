package migrations_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/rackplane/rackplane/internal/pgtest"
	"github.com/rackplane/rackplane/migrations"
)

// TestConcurrentStarts runs the migrations from four "regions" at once on
// one empty database: each file is applied once, and a later start applies
// nothing.
func TestConcurrentStarts(t *testing.T) {
	pool := pgtest.NewPool(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	applied := make([]int, 4)
	var g errgroup.Group
	for i := range applied {
		g.Go(func() (err error) {
			applied[i], err = migrations.Apply(ctx, pool, log)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var files, total int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT name) FROM schema_migrations`).Scan(&total, &files); err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, n := range applied {
		sum += n
	}
	if sum != files || total != files || files < 6 {
		t.Fatalf("applied %v (sum %d) for %d files, %d rows", applied, sum, files, total)
	}
	if n, err := migrations.Apply(ctx, pool, log); err != nil || n != 0 {
		t.Fatalf("a later start applied %d (%v)", n, err)
	}
}
