package migrations

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed *.sql
var files embed.FS

// lockKey is the advisory lock all regions take while migrating.
const lockKey = 0x7261636b706c616e // "rackplan"

// Apply brings the database up to date and returns how many files it applied.
func Apply(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) (int, error) {
	return ApplyBefore(ctx, pool, log, "")
}

// ApplyBefore applies the files whose names sort before stop (all of them
// when stop is ""): a database as an earlier version left it, for tests
// of what a migration does to the data it finds.
func ApplyBefore(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, stop string) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return 0, fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(lockKey))

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name text PRIMARY KEY,
		checksum text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied := map[string]string{}
	rows, err := conn.Query(ctx, "SELECT name, checksum FROM schema_migrations")
	if err != nil {
		return 0, fmt.Errorf("migrate: read applied: %w", err)
	}
	for rows.Next() {
		var n, c string
		if err := rows.Scan(&n, &c); err != nil {
			return 0, fmt.Errorf("migrate: read applied: %w", err)
		}
		applied[n] = c
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("migrate: read applied: %w", err)
	}

	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return 0, fmt.Errorf("migrate: list: %w", err)
	}
	sort.Strings(names)
	n := 0
	for _, name := range names {
		if stop != "" && name >= stop {
			break
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return n, fmt.Errorf("migrate: read %s: %w", name, err)
		}
		sum := sha256.Sum256(body)
		checksum := hex.EncodeToString(sum[:])
		if prev, ok := applied[name]; ok {
			if prev != checksum {
				return n, fmt.Errorf("migrate: %s was changed after it was applied; add a new migration instead", name)
			}
			continue
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", name, checksum)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("migrate: apply %s: %w", name, err)
		}
		log.Info("applied migration", "name", name)
		n++
	}
	return n, nil
}
