package postgres

import (
	"context"
	"crypto/rand"
)

// RegionSecret returns the region's secret called name, making it on first
// use. Every region instance sharing the database gets the same bytes, so a
// token one instance derives another can check.
func (db *DB) RegionSecret(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, wrap("region secret", err)
	}
	if _, err := db.pool.Exec(ctx, `INSERT INTO region_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, wrap("region secret", err)
	}
	var secret []byte
	err := db.pool.QueryRow(ctx, `SELECT secret FROM region_secrets WHERE name = $1`, name).Scan(&secret)
	return secret, wrap("region secret", err)
}
