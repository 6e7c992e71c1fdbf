package dial

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresConfig says how a binary reaches PostgreSQL.
type PostgresConfig struct {
	// URL is a postgres:// URL or a key=value string; empty is
	// $DATABASE_URL (see ConnString).
	URL string
}

// RegisterFlags binds c's fields to flags of fs.
func (c *PostgresConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "database-url", c.URL, "PostgreSQL URL or key=value string (empty: libpq defaults and PG* variables; DATABASE_URL is read too)")
}

// ConnString is what to connect with: URL, or $DATABASE_URL when URL is
// empty.
func (c PostgresConfig) ConnString() string { return DatabaseURL(c.URL) }

// Validate reports a connection string that does not parse.
func (c PostgresConfig) Validate() error {
	if _, err := pgxpool.ParseConfig(c.ConnString()); err != nil {
		return fmt.Errorf("-database-url (or DATABASE_URL): %v: give a URL such as postgres://user@host:5432/rackplane, or key=value pairs", err)
	}
	return nil
}

// DatabaseURL returns url, or $DATABASE_URL when url is empty; an empty
// result means libpq defaults (PGHOST, PGUSER, … and the local socket).
func DatabaseURL(url string) string {
	if url != "" {
		return url
	}
	return os.Getenv("DATABASE_URL")
}

// Postgres opens a pool and checks that the server answers.
func Postgres(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		c := cfg.ConnConfig
		return nil, ExplainPostgres(err, PostgresTarget{Host: c.Host, Port: c.Port, User: c.User, Database: c.Database})
	}
	return pool, nil
}
